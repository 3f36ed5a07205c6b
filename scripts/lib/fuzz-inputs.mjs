// Hostile inputs for `npm run fuzz`, as fast-check arbitraries: strings an attacker would try, JSON bodies (valid,
// malformed, deep, with prototype keys), and mutations of a valid FHIR document (one node replaced or removed).
import fc from 'fast-check';

const NASTY = [
  '',
  ' ',
  '../../../../etc/passwd',
  '..',
  '.',
  '%2e%2e%2f%2e%2e',
  '%00',
  '\u0000',
  '%',
  '%ZZ',
  '\uD800',
  '__proto__',
  'constructor',
  'prototype',
  '<script>alert(1)</script>',
  '"><img src=x onerror=alert(1)>',
  "' OR 1=1 --",
  '${7*7}{{7*7}}',
  'javascript:alert(1)',
  'http://169.254.169.254/latest/meta-data/',
  'http://127.0.0.1:1/',
  'file:///etc/passwd',
  'Patient/../../admin',
  'DeviceRequest/',
  '/',
  '1e999999',
  '-0',
  'NaN',
  'null',
  'true',
  '[]',
  '{}',
  '\r\nSet-Cookie: x=1',
  'ÿþ',
  '😀'.repeat(50),
];

export const hostileString = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 70_000 }).map((n) => 'a'.repeat(n)) },
  { weight: 1, arbitrary: fc.constantFrom(...NASTY).map((s) => encodeURIComponent(s.toWellFormed())) },
);

const hostileScalar = fc.oneof(
  hostileString,
  fc.double(),
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(Number.MAX_SAFE_INTEGER + 2, -1, 0),
);

/** A JSON value with hostile leaves and keys (prototype keys included). */
const hostileJson = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, hostileScalar, tie('array'), tie('object')),
  array: fc.array(tie('value'), { maxLength: 5 }),
  object: fc
    .array(
      fc.tuple(
        fc.oneof(fc.constantFrom('__proto__', 'constructor', 'resourceType', 'id', 'item'), fc.string()),
        tie('value'),
      ),
      {
        maxLength: 5,
      },
    )
    .map((pairs) => {
      const o = {};
      for (const [k, v] of pairs)
        Object.defineProperty(o, k, { value: v, enumerable: true, configurable: true, writable: true });
      return o;
    }),
})).value;

/** Raw request body text: JSON of hostile values, or text that is not JSON at all, deep nesting, prototype pollution. */
export const hostileBodyText = fc.oneof(
  { weight: 4, arbitrary: hostileJson.map((v) => JSON.stringify(v) ?? 'null') },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 100_000 }).map((d) => '['.repeat(d) + ']'.repeat(d)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '{"__proto__":{"admin":true}}',
      '{"a":1,"a":2}',
      '{',
      '{"x":"\\u0000"}',
      'null',
      '1e999999',
    ),
  },
  { weight: 1, arbitrary: hostileString },
);

/** Replaces (or removes) the `pick`-th node of a JSON document with `value`; the document is copied. */
function mutate(document, pick, value, remove) {
  const copy = structuredClone(document);
  const nodes = [];
  const walk = (parent, key, node) => {
    nodes.push([parent, key]);
    if (node && typeof node === 'object') for (const [k, v] of Object.entries(node)) walk(node, k, v);
  };
  for (const [k, v] of Object.entries(copy)) walk(copy, k, v);
  if (nodes.length === 0) return copy;
  const [parent, key] = nodes[pick % nodes.length];
  if (remove && !Array.isArray(parent)) delete parent[key];
  else parent[key] = value;
  return copy;
}

/** One to three mutations of `document`. */
export const mutationOf = (document) =>
  fc
    .array(fc.tuple(fc.nat(), hostileJson, fc.boolean()), { minLength: 1, maxLength: 3 })
    .map((steps) => steps.reduce((doc, [pick, value, remove]) => mutate(doc, pick, value, remove), document));
