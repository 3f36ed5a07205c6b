import { DtrError } from '@dtr/kernel';

// The JSON types of the FHIR elements our code reads, by element name where the name means the same type in every
// resource (R4). A resource from a payer or a bundle is checked against them before anything walks it, so a
// wrong-typed element (an `item` that is a number, a `url` that is an object) is a clear refusal naming the element
// rather than a TypeError deep in the package validator or the prefill engine.
// @see https://hl7.org/fhir/R4/json.html

/** Elements with cardinality `0..*` whose items are complex (objects). */
const OBJECT_ARRAYS = new Set([
  'extension',
  'modifierExtension',
  'item',
  'entry',
  'coding',
  'answerOption',
  'enableWhen',
  'initial',
  'contained',
  'parameter',
  'part',
  'dataRequirement',
  'relatedArtifact',
  'include',
  'exclude',
  'contains',
  'concept',
  'security',
  'tag',
  'payor',
  'answer',
  'codeFilter',
  'dateFilter',
  'telecom',
]);
/** Top-level elements whose type depends on the resource (`content` is a code in CodeSystem, a list in Library). */
const RESOURCE_ARRAYS: Record<string, string[]> = { Library: ['content'], DocumentReference: ['content'] };
/** Elements with cardinality `0..*` whose items are primitives (strings). */
const STRING_ARRAYS = new Set(['given', 'prefix', 'suffix', 'profile']);
/** Elements that are a string wherever they appear. */
const STRINGS = new Set([
  'resourceType',
  'id',
  'url',
  'fullUrl',
  'linkId',
  'expression',
  'language',
  'system',
  'version',
  'reference',
  'display',
  'status',
  'contentType',
  'data',
  'answerValueSet',
  'valueString',
  'valueCanonical',
  'valueUri',
  'valueUrl',
  'valueCode',
]);
/** Elements that are an object wherever they appear. */
const OBJECTS = new Set([
  'meta',
  'valueCoding',
  'valueQuantity',
  'valueReference',
  'valueExpression',
  'valueAttachment',
]);

const kind = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Where `value` (reached at `at`) breaks the element types above, or undefined. Depth is bounded by the parser. */
function problemIn(value: unknown, at: string): string | undefined {
  if (!isObject(value)) return undefined;
  for (const [key, v] of Object.entries(value)) {
    const here = `${at}.${key}`;
    if (OBJECT_ARRAYS.has(key)) {
      if (!Array.isArray(v)) return `${here} must be an array (it is ${kind(v)})`;
      for (let i = 0; i < v.length; i++) {
        if (!isObject(v[i])) return `${here}[${i}] must be an object (it is ${kind(v[i])})`;
        const inner = problemIn(v[i], `${here}[${i}]`);
        if (inner) return inner;
      }
      continue;
    }
    if (STRING_ARRAYS.has(key)) {
      if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) return `${here} must be an array of strings`;
      continue;
    }
    if (STRINGS.has(key) && typeof v !== 'string') return `${here} must be a string (it is ${kind(v)})`;
    if (OBJECTS.has(key) && !isObject(v)) return `${here} must be an object (it is ${kind(v)})`;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const inner = problemIn(v[i], `${here}[${i}]`);
        if (inner) return inner;
      }
    } else {
      const inner = problemIn(v, here);
      if (inner) return inner;
    }
  }
  return undefined;
}

/**
 * Why `value` is not a FHIR resource our code can walk safely (not an object, no resourceType, or an element of the
 * wrong JSON type), or undefined when it is.
 */
export function resourceShapeProblem(value: unknown): string | undefined {
  if (!isObject(value)) return `a resource must be an object (it is ${kind(value)})`;
  if (typeof value['resourceType'] !== 'string' || !/^[A-Z][A-Za-z]{1,63}$/.test(value['resourceType']))
    return 'a resource must have a resourceType';
  for (const key of RESOURCE_ARRAYS[value['resourceType']] ?? []) {
    const v = value[key];
    if (v !== undefined && (!Array.isArray(v) || !v.every(isObject)))
      return `${value['resourceType']}.${key} must be an array of objects`;
  }
  return problemIn(value, value['resourceType']);
}

/**
 * The resources of a Bundle's entries, each checked ({@link resourceShapeProblem}); `what` names the bundle in the
 * error (`the questionnaire package`, `the patient bundle`). Entries without a resource are skipped.
 */
export function checkedBundleResources(
  bundle: unknown,
  what: string,
  code: 'UPSTREAM_ERROR' | 'INVALID_INPUT',
): Array<{ fullUrl?: string; resource: Record<string, unknown> & { resourceType: string } }> {
  if (!isObject(bundle)) throw new DtrError(code, `${what} is not a Bundle`);
  const entries = bundle['entry'] ?? [];
  if (!Array.isArray(entries)) throw new DtrError(code, `${what}: Bundle.entry must be an array`);
  const out: Array<{ fullUrl?: string; resource: Record<string, unknown> & { resourceType: string } }> = [];
  entries.forEach((entry: unknown, i) => {
    if (!isObject(entry)) throw new DtrError(code, `${what}: Bundle.entry[${i}] must be an object`);
    if (entry['resource'] === undefined || entry['resource'] === null) return;
    const problem = resourceShapeProblem(entry['resource']);
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
