import { randomUUID } from 'node:crypto';
import {
  type Bundle,
  type Coding,
  type FhirResource,
  type Parameters,
  type ParametersParameter,
  PayerHttpError,
  isResource,
} from './fhir.types.js';
import type { PackageStore } from './package-store.service.js';
import { DTR_VERSIONS, type DtrVersion } from '@dtr/fhir';

export type DtrIgVersion = DtrVersion;
const DTR_IG_VERSIONS = DTR_VERSIONS;

export function isDtrIgVersion(v: unknown): v is DtrIgVersion {
  return typeof v === 'string' && (DTR_IG_VERSIONS as readonly string[]).includes(v);
}

/** Name of the output parameter carrying each package bundle, per DTR version. */
const BUNDLE_PARAMETER: Record<DtrIgVersion, string> = {
  // @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/OperationDefinition-questionnaire-package.html
  '2.2': 'packagebundle',
  // @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/OperationDefinition-questionnaire-package.html
  '2.1': 'PackageBundle',
  // @see https://hl7.org/fhir/us/davinci-dtr/STU2.0.1/OperationDefinition-questionnaire-package.html
  '2.0.1': 'return',
};

export interface QuestionnairePackageRequest {
  coverage: FhirResource[];
  order: FhirResource[];
  questionnaire: string[];
  context?: string;
  changedsince?: string;
  /** The `value[x]` element `changedsince` came in (checked against the version's profile). */
  changedsinceType?: string;
}

/**
 * How each version's input profile types `changedsince`: `only instant` in all three (the sandbox checks it strictly,
 * so a client sending `valueDateTime` or a date without a time zone is refused).
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2/StructureDefinition-dtr-qpackage-input-parameters.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/StructureDefinition-dtr-qpackage-input-parameters.html
 * @see https://hl7.org/fhir/us/davinci-dtr/2.2.0/en/StructureDefinition-dtr-qpackage-input-parameters.html
 */
const CHANGEDSINCE_TYPE: Record<DtrIgVersion, 'valueInstant' | 'valueDateTime'> = {
  '2.0.1': 'valueInstant',
  '2.1': 'valueInstant',
  '2.2': 'valueInstant',
};
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const DATE_TIME = /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?)?)?$/;

function readChangedSince(param: ParametersParameter | undefined, version: DtrIgVersion): string | undefined {
  if (!param) return undefined;
  const expected = CHANGEDSINCE_TYPE[version];
  const present = Object.keys(param).filter((k) => k.startsWith('value'));
  if (present.length !== 1 || present[0] !== expected) {
    throw new PayerHttpError(
      400,
      'invalid',
      `changedsince must be ${expected} in DTR ${version}${present.length ? ` (got ${present.join(', ')})` : ''}`,
    );
  }
  const value = (param as Record<string, unknown>)[expected];
  const pattern = expected === 'valueInstant' ? INSTANT : DATE_TIME;
  if (typeof value !== 'string' || !pattern.test(value) || Number.isNaN(Date.parse(value)))
    throw new PayerHttpError(400, 'invalid', `changedsince is not a valid ${expected.slice(5).toLowerCase()}`);
  return value;
}

/**
 * Reads the operation's input Parameters; a missing or malformed input is a 400.
 * `coverage` is 1..1 in DTR 2.2 and 1..* before.
 */
export function parseQuestionnairePackageInput(body: unknown, version: DtrIgVersion): QuestionnairePackageRequest {
  if (!isResource(body) || body.resourceType !== 'Parameters') {
    throw new PayerHttpError(400, 'invalid', 'the body must be a Parameters resource');
  }
  const params = (body as Parameters).parameter ?? [];
  if (!Array.isArray(params)) throw new PayerHttpError(400, 'invalid', 'Parameters.parameter must be an array');
  const named = (name: string) =>
    params.filter((p): p is ParametersParameter => typeof p === 'object' && p !== null && p.name === name);

  const coverage = named('coverage').map((p) => p.resource);
  if (coverage.length === 0) throw new PayerHttpError(400, 'required', 'coverage is required');
  if (version === '2.2' && coverage.length > 1) throw new PayerHttpError(400, 'invalid', 'coverage is 1..1 in DTR 2.2');
  if (!coverage.every((c) => isResource(c) && c.resourceType === 'Coverage')) {
    throw new PayerHttpError(400, 'invalid', 'coverage must carry a Coverage resource');
  }
  const order = named('order').map((p) => p.resource);
  if (!order.every(isResource)) throw new PayerHttpError(400, 'invalid', 'order must carry a resource');
  const questionnaire = named('questionnaire').map((p) => p.valueCanonical ?? p.valueUri ?? p.valueString);
  if (!questionnaire.every((q): q is string => typeof q === 'string' && q.length > 0)) {
    throw new PayerHttpError(400, 'invalid', 'questionnaire must be a canonical');
  }
  const changedsince = readChangedSince(named('changedsince')[0], version);
  const ctx = named('context')[0];
  const context = ctx?.valueString ?? (ctx?.valueIdentifier as { value?: string } | undefined)?.value;
  return {
    coverage: coverage as FhirResource[],
    order: order as FhirResource[],
    questionnaire: questionnaire as string[],
    ...(context ? { context } : {}),
    ...(changedsince ? { changedsince, changedsinceType: CHANGEDSINCE_TYPE[version] } : {}),
  };
}

/** Codes of an order, wherever its resource type keeps them (an Appointment's serviceType, an Encounter's type). */
function orderCodings(order: FhirResource): Coding[] {
  const concepts = [
    'code',
    'codeCodeableConcept',
    'medicationCodeableConcept',
    'productOrService',
    'serviceType',
    'type',
  ]
    .flatMap((k) => (Array.isArray(order[k]) ? (order[k] as unknown[]) : [order[k]]))
    .filter((c): c is { coding?: Coding[] } => typeof c === 'object' && c !== null);
  return concepts.flatMap((c) => (Array.isArray(c.coding) ? c.coding : []));
}

/** Adaptive questionnaires are handed out without items: `$next-question` supplies them one at a time. */
function forPackage(r: FhirResource): FhirResource {
  if (r.resourceType !== 'Questionnaire' || !isAdaptive(r)) return r;
  const { item: _items, ...rest } = r;
  return rest as FhirResource;
}

export function isAdaptive(q: FhirResource): boolean {
  const exts = (q['extension'] as Array<{ url?: string; valueBoolean?: boolean }> | undefined) ?? [];
  return exts.some(
    (e) =>
      e.url === 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-questionnaireAdaptive' &&
      e.valueBoolean === true,
  );
}

/**
 * Picks questionnaires by the canonicals asked for, else by the orders' codes through `rules.json`,
 * and answers one collection Bundle per questionnaire (one merged Bundle for 2.0.1, whose `return` is 1..1).
 * With `changedsince`, only resources whose meta.lastUpdated is later are included.
 */
export function questionnairePackage(
  store: PackageStore,
  input: QuestionnairePackageRequest,
  version: DtrIgVersion,
): Parameters {
  const canonicals =
    input.questionnaire.length > 0
      ? input.questionnaire
      : store.questionnairesForCodes(input.order.flatMap(orderCodings));
  const warnings: string[] = [];
  const packages: FhirResource[][] = [];
  for (const canonical of canonicals) {
    const q = store.resolve('Questionnaire', canonical);
    if (!q) {
      warnings.push(`questionnaire ${canonical} is not known to this payer`);
      continue;
    }
    packages.push(store.packageFor(q));
  }
  if (canonicals.length === 0) warnings.push('no documentation is required for the orders given');

  const since = input.changedsince ? Date.parse(input.changedsince) : undefined;
  const changed = (r: FhirResource) => since === undefined || Date.parse(r.meta?.lastUpdated ?? '') > since;
  const toBundle = (resources: FhirResource[]): Bundle => ({
    resourceType: 'Bundle',
    id: randomUUID(),
    meta: { lastUpdated: new Date().toISOString() },
    type: 'collection',
    timestamp: new Date().toISOString(),
    entry: resources.filter(changed).map((r) => ({ fullUrl: fullUrl(r), resource: forPackage(r) })),
  });

  const name = BUNDLE_PARAMETER[version];
  const parameter: ParametersParameter[] =
    version === '2.0.1'
      ? [{ name, resource: toBundle(dedupe(packages.flat())) }]
      : packages.map((resources) => ({ name, resource: toBundle(resources) }));
  if (warnings.length > 0 && version !== '2.0.1') {
    parameter.push({
      name: 'outcome',
      resource: {
        resourceType: 'OperationOutcome',
        issue: warnings.map((w) => ({ severity: 'warning', code: 'informational', diagnostics: w })),
      },
    });
  }
  return { resourceType: 'Parameters', parameter };
}

function fullUrl(r: FhirResource): string {
  return r.url ? `${r.url}${r.version ? `|${r.version}` : ''}` : `urn:uuid:${randomUUID()}`;
}

function dedupe(resources: FhirResource[]): FhirResource[] {
  const seen = new Set<string>();
  return resources.filter((r) => {
    const k = `${r.resourceType}|${r.url}|${r.version}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
