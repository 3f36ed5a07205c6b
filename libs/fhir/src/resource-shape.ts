import { DtrError } from '@dtr/kernel';
import type { FhirResource } from './fhir-client.js';
import { fhirModelShapeProblems } from './fhir-model-shape.js';

// A resource from a payer or a bundle is checked before anything walks it, so that a wrong-typed element (an `item`
// that is a number, a `url` that is an object) is a clear refusal naming the element rather than a TypeError deep in
// the package validator or the prefill engine. Each element is judged by the type the FHIR R4 model gives it where
// it stands, never by its name alone: `language` is a code on a resource and a CodeableConcept in
// `Patient.communication`, `reference` a string in a Reference and a Reference in `Consent.provision.actor`.
// @see https://hl7.org/fhir/R4/json.html

const kind = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : `a ${typeof v}`;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Why `value` is not an object with a resourceType (and a string id, if any), or undefined when it is. */
function envelopeProblem(value: unknown): string | undefined {
  if (!isObject(value)) return `a resource must be an object (it is ${kind(value)})`;
  if (typeof value['resourceType'] !== 'string' || !/^[A-Z][A-Za-z]{1,63}$/.test(value['resourceType']))
    return 'a resource must have a resourceType';
  // Resource.id is a string in every type, and callers build references from it before any screening.
  if (value['id'] !== undefined && typeof value['id'] !== 'string')
    return `${value['resourceType']}.id must be a string (it is ${kind(value['id'])})`;
  return undefined;
}

/**
 * Why `value` is not a FHIR resource our code can walk safely (not an object, no resourceType, or an element of the
 * wrong JSON type for the model, nested resources included), or undefined when it is.
 */
export function resourceShapeProblem(value: unknown): string | undefined {
  const envelope = envelopeProblem(value);
  if (envelope) return envelope;
  const resource = value as unknown as FhirResource;
  const [first] = fhirModelShapeProblems(resource);
  return first === undefined ? undefined : `${resource.resourceType}.${first}`;
}

/**
 * The resources of a Bundle's entries, each checked; `what` names the bundle in the error (`the questionnaire
 * package`, `the patient bundle`). Entries without a resource are skipped. With `elements: 'envelope'` only the
 * bundle's own structure is checked (each resource an object with a resourceType, each fullUrl a string): for a
 * caller that judges each resource's elements itself and leaves a malformed one out rather than refusing the bundle.
 */
export function checkedBundleResources(
  bundle: unknown,
  what: string,
  code: 'UPSTREAM_ERROR' | 'INVALID_INPUT',
  options: { elements?: 'model' | 'envelope' } = {},
): Array<{ fullUrl?: string; resource: Record<string, unknown> & { resourceType: string } }> {
  if (!isObject(bundle)) throw new DtrError(code, `${what} is not a Bundle`);
  const entries = bundle['entry'] ?? [];
  if (!Array.isArray(entries)) throw new DtrError(code, `${what}: Bundle.entry must be an array`);
  const judge = options.elements === 'envelope' ? envelopeProblem : resourceShapeProblem;
  const out: Array<{ fullUrl?: string; resource: Record<string, unknown> & { resourceType: string } }> = [];
  entries.forEach((entry: unknown, i) => {
    if (!isObject(entry)) throw new DtrError(code, `${what}: Bundle.entry[${i}] must be an object`);
    if (entry['resource'] === undefined || entry['resource'] === null) return;
    const problem = judge(entry['resource']);
    if (problem) throw new DtrError(code, `${what}: entry ${i} is malformed: ${problem}`);
    const fullUrl = entry['fullUrl'];
    if (fullUrl !== undefined && typeof fullUrl !== 'string')
      throw new DtrError(code, `${what}: Bundle.entry[${i}].fullUrl must be a string`);
    out.push({
      ...(fullUrl ? { fullUrl } : {}),
      resource: entry['resource'] as Record<string, unknown> & { resourceType: string },
    });
  });
  return out;
}
