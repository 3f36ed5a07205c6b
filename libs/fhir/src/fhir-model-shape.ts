import { createRequire } from 'node:module';
import type { FhirResource } from './fhir-client.js';

/**
 * The shape of the FHIR R4 (4.0.1) model, for checking a resource read from a peer before anything walks it: lists
 * where the model has lists and single values where it has single values, JSON primitives where the model has a
 * primitive (of the right JSON kind: string, number, boolean) and objects where it has a complex type. An element's
 * type comes from where it stands (`Patient.communication.language` is a CodeableConcept, `Resource.language` a
 * code), never from its name alone.
 *
 * The model is the modelinfo cql-exec-fhir evaluates with (element types and ListTypeSpecifier), read once per
 * process. Elements the model does not know (extensions of newer versions, `_primitive` siblings) and resource types
 * it does not know are not judged.
 */

type Spec = { kind: 'named'; type: string } | { kind: 'choice'; types: string[] } | { kind: 'list'; of: Spec };
type JsonKind = 'string' | 'number' | 'boolean';

interface ClassShape {
  base: string | undefined;
  elements: Map<string, Spec>;
}

interface Model {
  classes: Map<string, ClassShape>;
  /** Flattened elements (own and inherited) of a class, built on first use. */
  flat: Map<string, Map<string, Spec>>;
  /** JSON key of a choice element (`onsetDateTime`) → element name and type, per class. */
  choices: Map<string, Map<string, { type: string }>>;
  /** JSON kind of each primitive type, null for complex types. */
  kinds: Map<string, JsonKind | null>;
}

const attribute = (attrs: string, name: string): string | undefined =>
  new RegExp(`(?:^|\\s)${name}="([^"]*)"`).exec(attrs)?.[1];

function parseSpec(attrs: string, body: string): Spec | undefined {
  const named = attribute(attrs, 'elementType');
  if (named) return { kind: 'named', type: named };
  const open = /<elementTypeSpecifier\b([^>]*?)(\/?)>/.exec(body);
  if (!open) return undefined;
  const specAttrs = open[1]!;
  const kind = attribute(specAttrs, 'xsi:type');
  const inner = body.slice(open.index + open[0].length);
  if (kind === 'ListTypeSpecifier') {
    const of = attribute(specAttrs, 'elementType');
    if (of) return { kind: 'list', of: { kind: 'named', type: of } };
    const nested = parseSpec('', inner);
    return nested ? { kind: 'list', of: nested } : undefined;
  }
  if (kind === 'ChoiceTypeSpecifier') {
    const types = [...inner.matchAll(/<choice\b([^>]*)\/>/g)].map(
      (m) => `${attribute(m[1]!, 'namespace') ?? 'FHIR'}.${attribute(m[1]!, 'name')}`,
    );
    return { kind: 'choice', types };
  }
  if (kind === 'NamedTypeSpecifier')
    return { kind: 'named', type: `${attribute(specAttrs, 'namespace') ?? 'FHIR'}.${attribute(specAttrs, 'name')}` };
  return undefined;
}

function parseModel(xml: string): Model {
  const classes = new Map<string, ClassShape>();
  for (const match of xml.matchAll(/<typeInfo\b([^>]*?)(?:\/>|>([\s\S]*?)<\/typeInfo>)/g)) {
    const attrs = match[1]!;
    if (attribute(attrs, 'xsi:type') !== 'ClassInfo') continue;
    const elements = new Map<string, Spec>();
    for (const element of (match[2] ?? '').matchAll(/<element\b([^>]*?)(?:\/>|>([\s\S]*?)<\/element>)/g)) {
      const name = attribute(element[1]!, 'name');
      const spec = parseSpec(element[1]!, element[2] ?? '');
      if (name && spec) elements.set(name, spec);
    }
    classes.set(`${attribute(attrs, 'namespace') ?? 'FHIR'}.${attribute(attrs, 'name')}`, {
      base: attribute(attrs, 'baseType'),
      elements,
    });
  }
  return { classes, flat: new Map(), choices: new Map(), kinds: new Map() };
}

let model: Model | undefined;
/** The FHIR 4.0.1 model shape, parsed once per process (about 20 ms). */
function fhirModel(): Model {
  if (!model) {
    const require = createRequire(import.meta.url);
    model = parseModel(require('cql-exec-fhir/lib/modelInfos/fhir-modelinfo-4.0.1.xml.js') as string);
  }
  return model;
}

function elementsOf(m: Model, type: string): Map<string, Spec> | undefined {
  let flat = m.flat.get(type);
  if (flat) return flat;
  const shape = m.classes.get(type);
  if (!shape) return undefined;
  flat = new Map(shape.base && shape.base.startsWith('FHIR.') ? (elementsOf(m, shape.base) ?? []) : []);
  for (const [name, spec] of shape.elements) flat.set(name, spec);
  m.flat.set(type, flat);
  const choices = new Map<string, { type: string }>();
  for (const [name, spec] of flat) {
    if (spec.kind !== 'choice') continue;
    for (const t of spec.types) {
      const local = t.slice(t.lastIndexOf('.') + 1);
      choices.set(`${name}${local[0]!.toUpperCase()}${local.slice(1)}`, { type: t });
    }
  }
  m.choices.set(type, choices);
  return flat;
}

const SYSTEM_KINDS: Record<string, JsonKind> = {
  'System.Boolean': 'boolean',
  'System.Integer': 'number',
  'System.Decimal': 'number',
};

/** The JSON kind of a primitive type (`FHIR.boolean` → boolean), or undefined for a complex type. */
function primitiveKind(m: Model, type: string): JsonKind | undefined {
  const known = m.kinds.get(type);
  if (known !== undefined) return known ?? undefined;
  const kind = computeKind(m, type);
  m.kinds.set(type, kind ?? null);
  return kind;
}

function computeKind(m: Model, type: string): JsonKind | undefined {
  if (type.startsWith('System.')) return SYSTEM_KINDS[type] ?? 'string';
  // Specialisations (`id`, `code`, `positiveInt`) inherit `value` from string or integer.
  const value = elementsOf(m, type)?.get('value');
  return value?.kind === 'named' && value.type.startsWith('System.')
    ? (SYSTEM_KINDS[value.type] ?? 'string')
    : undefined;
}

const MAX_DEPTH = 64;
const MAX_PROBLEMS = 3;

function kindOf(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

function checkValue(m: Model, type: string, value: unknown, path: string, depth: number, problems: string[]): void {
  if (problems.length >= MAX_PROBLEMS || value === null || value === undefined) return;
  const primitive = primitiveKind(m, type);
  if (primitive) {
    if (typeof value !== primitive) problems.push(`${path} must be a ${primitive}, not ${kindOf(value)}`);
    return;
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push(`${path} must be an object (${type.replace(/^FHIR\./, '')}), not ${kindOf(value)}`);
    return;
  }
  if (depth >= MAX_DEPTH) {
    problems.push(`${path} is nested too deeply`);
    return;
  }
  let target = type;
  if (type === 'FHIR.Resource') {
    // A contained or bundled resource is checked as its own type.
    const own = (value as { resourceType?: unknown }).resourceType;
    if (typeof own === 'string' && m.classes.has(`FHIR.${own}`)) target = `FHIR.${own}`;
  }
  checkObject(m, target, value as Record<string, unknown>, path, depth + 1, problems);
}

function checkObject(
  m: Model,
  type: string,
  object: Record<string, unknown>,
  path: string,
  depth: number,
  problems: string[],
): void {
  const elements = elementsOf(m, type);
  if (!elements) return;
  const choices = m.choices.get(type)!;
  for (const key of Object.keys(object)) {
    if (problems.length >= MAX_PROBLEMS) return;
    if (key === 'resourceType' || key.startsWith('_')) continue;
    const value = object[key];
    if (value === null || value === undefined) continue;
    const at = path ? `${path}.${key}` : key;
    const spec = elements.get(key);
    if (spec?.kind === 'list') {
      if (!Array.isArray(value)) {
        problems.push(`${at} must be an array`);
        continue;
      }
      const of = spec.of.kind === 'named' ? spec.of.type : undefined;
      if (!of) continue;
      // FHIR JSON allows null only in a list of primitives (kept in step with its `_element` list).
      const complex = !primitiveKind(m, of);
      value.forEach((item, i) => {
        if (complex && item === null) problems.push(`${at}[${i}] must be an object, not null`);
        else checkValue(m, of, item, `${at}[${i}]`, depth, problems);
      });
      continue;
    }
    const single = spec?.kind === 'named' ? spec.type : spec ? undefined : choices.get(key)?.type;
    if (!single) continue;
    if (Array.isArray(value)) {
      problems.push(`${at} must be a single value, not an array`);
      continue;
    }
    checkValue(m, single, value, at, depth, problems);
  }
}

/**
 * The shape problems of one resource (at most a few, the first ones found), empty when it fits the model. A
 * resource type the model does not know is not judged.
 */
export function fhirModelShapeProblems(resource: FhirResource): string[] {
  const m = fhirModel();
  const problems: string[] = [];
  if (typeof resource.resourceType !== 'string' || !m.classes.has(`FHIR.${resource.resourceType}`)) return problems;
  checkObject(m, `FHIR.${resource.resourceType}`, resource as unknown as Record<string, unknown>, '', 0, problems);
  return problems;
}

/**
 * The top-level elements of a resource that break the model (each judged on its own), so that a caller that cannot
 * leave the whole resource out (the Patient) can leave out only those.
 */
export function fhirModelMalformedElements(resource: FhirResource): string[] {
  const m = fhirModel();
  const type = `FHIR.${resource.resourceType}`;
  if (!m.classes.has(type)) return [];
  const object = resource as unknown as Record<string, unknown>;
  return Object.keys(object).filter((key) => {
    const own: string[] = [];
    checkObject(m, type, { [key]: object[key] }, '', 0, own);
    return own.length > 0;
  });
}
