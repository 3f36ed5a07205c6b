import { randomUUID } from 'node:crypto';
import type { DtrVersion, FhirResource } from '@dtr/fhir';
import { parseResourceReference } from '@dtr/fhir';

/**
 * The payer-bound copy of a completed QuestionnaireResponse: withheld answers removed, the collection Bundle of the
 * payer's DTR version (the QR first, then the resources its answers reference), and resource ids that look like
 * business identifiers replaced by opaque ones, consistently within the Bundle, references rewritten.
 * @see https://hl7.org/fhir/us/davinci-dtr/StructureDefinition-DTR-QRBundle.html
 */
export const DTR_QR_BUNDLE = 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/DTR-QRBundle';
export const SUBMISSION_SYSTEM = 'urn:dtr-backend:submission';

interface Item {
  linkId?: string;
  answer?: Array<Record<string, unknown> & { item?: Item[] }>;
  item?: Item[];
  [key: string]: unknown;
}

/** A copy without the withheld items (their answers and nested items); the EHR keeps the full response. */
export function withholdAnswers(qr: FhirResource, withheld: ReadonlySet<string>): FhirResource {
  const strip = (items: Item[] | undefined): Item[] | undefined =>
    items?.flatMap((item) => {
      // A withheld item goes whole: its answers, its nested items, and the question itself (which can tell as much).
      if (item.linkId && withheld.has(item.linkId)) return [];
      const copy: Item = { ...item };
      if (item.item) copy.item = strip(item.item)!;
      if (item.answer) copy.answer = item.answer.map((a) => (a.item ? { ...a, item: strip(a.item)! } : a));
      return [copy];
    });
  const copy = structuredClone(qr) as FhirResource & { item?: Item[] };
  if (copy.item) copy.item = strip(copy.item)!;
  return copy;
}

/** `Type/id` of every answer that is a reference (the resources the payer-bound Bundle carries after the QR). */
export function answerReferences(qr: FhirResource): string[] {
  const found = new Set<string>();
  const visit = (items: Item[] | undefined) => {
    for (const item of items ?? []) {
      for (const answer of item.answer ?? []) {
        const ref = (answer['valueReference'] as { reference?: string } | undefined)?.reference;
        const parsed = parseResourceReference(ref);
        if (parsed) found.add(`${parsed.type}/${parsed.id}`);
        visit(answer.item);
      }
      visit(item.item);
    }
  };
  visit((qr as { item?: Item[] }).item);
  return [...found];
}

export interface BundleInput {
  qr: FhirResource;
  resources: FhirResource[];
  igVersion: DtrVersion;
  submissionId: string;
  now: Date;
  /** The EHR's FHIR base, for entry fullUrls. */
  fhirBase: string;
}

/** The collection Bundle in the payer's DTR version: 2.1 and 2.2 carry the DTR-QRBundle profile; 2.0.1 a plain one. */
export function questionnaireResponseBundle(input: BundleInput): FhirResource {
  const entry = [input.qr, ...input.resources].map((resource) => ({
    fullUrl: resource.id ? `${input.fhirBase}/${resource.resourceType}/${resource.id}` : `urn:uuid:${randomUUID()}`,
    resource,
  }));
  return {
    resourceType: 'Bundle',
    ...(input.igVersion === '2.0.1' ? {} : { meta: { profile: [DTR_QR_BUNDLE] } as FhirResource['meta'] }),
    identifier: { system: SUBMISSION_SYSTEM, value: input.submissionId },
    type: 'collection',
    timestamp: input.now.toISOString(),
    entry,
  };
}

/** Digits and letters only, lower case: `123-45-6789` and `123456789` are the same identifier. */
const squash = (value: string) => value.toLowerCase().replace(/[^a-z0-9]/g, '');
const SSN_LIKE = /^\d{3}-?\d{2}-?\d{4}$/;

/** Every identifier value a resource carries (identifier[], Coverage subscriberId, nested identifiers). */
function identifierValues(resource: FhirResource): string[] {
  const values: string[] = [];
  const ids = resource['identifier'];
  for (const id of Array.isArray(ids) ? ids : ids ? [ids] : []) {
    const value = (id as { value?: unknown }).value;
    if (typeof value === 'string' && value.length > 0) values.push(value);
  }
  const subscriber = resource['subscriberId'];
  if (typeof subscriber === 'string' && subscriber) values.push(subscriber);
  return values;
}

/**
 * Replaces every resource id that equals (ignoring punctuation and case) an identifier value of any resource in the
 * Bundle or one of `extraIdentifiers` (the patient's MRN, SSN, member id), or that looks like an SSN, by a random
 * opaque id; rewrites every reference to it. Returns the map (opaque → original) that stays on our side.
 */
export function pseudonymizeIds(
  bundle: FhirResource,
  extraIdentifiers: string[] = [],
): { bundle: FhirResource; map: Record<string, string> } {
  const copy = structuredClone(bundle) as FhirResource & {
    entry?: Array<{ fullUrl?: string; resource: FhirResource }>;
  };
  const entries = copy.entry ?? [];
  const business = new Set(
    [...extraIdentifiers, ...entries.flatMap((e) => identifierValues(e.resource))].map(squash).filter(Boolean),
  );
  const renamed = new Map<string, string>();
  const map: Record<string, string> = {};
  const rename = (type: string, id: string): string => {
    const key = `${type}/${id}`;
    const existing = renamed.get(key);
    if (existing) return existing;
    const opaque = randomUUID();
    renamed.set(key, opaque);
    map[`${type}/${opaque}`] = key;
    return opaque;
  };
  const looksBusiness = (id: string) => business.has(squash(id)) || SSN_LIKE.test(id);
  // Ids first: decides the renames, so references anywhere (even to resources not in the Bundle) follow.
  for (const e of entries) {
    if (e.resource.id && looksBusiness(e.resource.id)) e.resource.id = rename(e.resource.resourceType, e.resource.id);
  }
  const rewrite = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rewrite);
    if (!value || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') {
        const parsed = parseResourceReference(v);
        if (parsed && (renamed.has(`${parsed.type}/${parsed.id}`) || looksBusiness(parsed.id))) {
          out[k] = `${parsed.type}/${rename(parsed.type, parsed.id)}`;
          continue;
        }
      }
      out[k] = rewrite(v);
    }
    return out;
  };
  for (const e of entries) {
    e.resource = rewrite(e.resource) as FhirResource;
    if (e.fullUrl && e.resource.id) {
      const parsed = parseResourceReference(e.fullUrl);
      if (parsed && parsed.base) e.fullUrl = `${parsed.base}/${e.resource.resourceType}/${e.resource.id}`;
    }
  }
  return { bundle: copy, map };
}
