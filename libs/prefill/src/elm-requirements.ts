import { type ElmLibrary, type FhirResource, parseResourceReference } from '@dtr/fhir';

/** ELM libraries by identifier (`id` or `id|version`). */
export type ElmIndex = Map<string, ElmLibrary>;

export interface Retrieve {
  resourceType: string;
  /** Codes the retrieve filters on, when they can be known before running (value set expansion or direct codes). */
  codes?: Array<{ system?: string; code: string }>;
  /** A value set whose codes are not available here: the retrieve cannot be narrowed by code. */
  unresolvedValueSet?: string;
  /** The value set `codes` were expanded from (a `code:in` search can name it instead of listing its codes). */
  valueSet?: string;
  /**
   * The retrieve is only used to find resources by id, the id coming from the launch context (the order, coverage,
   * encounter or patient) and literals: `[Encounter] E where 'Encounter/' + E.id = "RequestEncounterReference"`.
   * Those resources are read by the references the context resources hold, not searched by type.
   */
  byReference?: boolean;
}

export interface DataRequirements {
  /** Statements (library id → define names) reachable from the requested defines. */
  statements: Map<string, Set<string>>;
  retrieves: Retrieve[];
}

type Node = Record<string, unknown>;

export function indexLibraries(libraries: ElmLibrary[]): ElmIndex {
  const index: ElmIndex = new Map();
  for (const elm of libraries) {
    const { id, version } = elm.library.identifier;
    index.set(id, elm);
    if (version) index.set(`${id}|${version}`, elm);
  }
  return index;
}

interface ElmFull {
  library: ElmLibrary['library'] & {
    codeSystems?: { def?: Array<{ name: string; id: string }> };
    codes?: { def?: Array<{ name: string; id: string; codeSystem?: { name: string; libraryName?: string } }> };
    statements?: { def?: Array<Node & { name: string }> };
  };
}

function includeTarget(library: ElmFull, alias: string): string | undefined {
  const include = library.library.includes?.def?.find((d) => d.localIdentifier === alias);
  return include ? (include.version ? `${include.path}|${include.version}` : include.path) : undefined;
}

/** The library an alias names from `library` (itself when no alias). */
function ownerOf(index: ElmIndex, library: ElmFull, alias: string | undefined): ElmFull | undefined {
  if (!alias) return library;
  const target = includeTarget(library, alias);
  return target ? (index.get(target) as ElmFull | undefined) : undefined;
}

/**
 * What an expression can depend on, following defines and functions across libraries (memoised): whether it reaches
 * a retrieve of patient data other than the Patient, and whether it reaches a parameter (the launch context).
 */
class DependencyFacts {
  private readonly memo = new Map<string, { retrieve: boolean; parameter: boolean }>();

  constructor(private readonly index: ElmIndex) {}

  of(node: unknown, libraryKey: string): { retrieve: boolean; parameter: boolean } {
    const library = this.index.get(libraryKey) as ElmFull | undefined;
    const result = { retrieve: false, parameter: false };
    if (!library) return { retrieve: true, parameter: false };
    walk(node, (n) => {
      const type = n['type'];
      if (type === 'Retrieve' && String(n['dataType'] ?? '').replace(/^\{[^}]*\}/, '') !== 'Patient')
        result.retrieve = true;
      else if (type === 'ParameterRef') result.parameter = true;
      else if (type === 'ExpressionRef' || type === 'FunctionRef') {
        const alias = n['libraryName'] as string | undefined;
        const target = alias ? includeTarget(library, alias) : libraryKey;
        const inner = target ? this.ofStatement(target, String(n['name'])) : { retrieve: true, parameter: false };
        result.retrieve ||= inner.retrieve;
        result.parameter ||= inner.parameter;
      }
    });
    return result;
  }

  private ofStatement(libraryKey: string, name: string): { retrieve: boolean; parameter: boolean } {
    const key = `${libraryKey}\u0000${name}`;
    const known = this.memo.get(key);
    if (known) return known;
    // Assume the worst while visiting (recursive functions), then record what was found.
    this.memo.set(key, { retrieve: true, parameter: false });
    const library = this.index.get(libraryKey) as ElmFull | undefined;
    const defs = library?.library.statements?.def?.filter((d) => d.name === name) ?? [];
    const result = { retrieve: defs.length === 0, parameter: false };
    for (const def of defs) {
      const inner = this.of((def as Node)['expression'], libraryKey);
      result.retrieve ||= inner.retrieve;
      result.parameter ||= inner.parameter;
    }
    this.memo.set(key, result);
    return result;
  }
}

/** The conjuncts of a where clause (`a and b and c`). */
function conjuncts(node: Node | undefined): Node[] {
  if (!node) return [];
  if (node['type'] === 'And') return (node['operand'] as Node[]).flatMap(conjuncts);
  return [node];
}

/** Whether `node` refers to the alias only through its `id` (`E.id`, `ToString(E.id)`, `'Encounter/' + E.id`). */
function onlyIdOf(node: unknown, alias: string): boolean {
  let id = false;
  let other = false;
  walk(node, (n) => {
    if ((n['type'] === 'Property' && n['scope'] === alias) || (n['type'] === 'AliasRef' && n['name'] === alias)) {
      if (n['type'] === 'Property' && n['path'] === 'id') id = true;
      else other = true;
    } else if (n['type'] === 'Retrieve' || n['type'] === 'Query') other = true;
  });
  return id && !other;
}

/**
 * Marks a query's single Retrieve source when its where clause pins the resource's id to a value that comes only from
 * the launch context (parameters, literals, and defines over them): such a retrieve finds resources by reference.
 */
function markIdMatchedSource(query: Node, libraryKey: string, facts: DependencyFacts, marked: WeakSet<object>): void {
  const sources = query['source'] as Array<{ alias?: string; expression?: Node }> | undefined;
  if (!sources || sources.length !== 1 || (query['relationship'] as unknown[] | undefined)?.length) return;
  const source = sources[0]!;
  if (source.expression?.['type'] !== 'Retrieve' || source.expression['codes'] || !source.alias) return;
  for (const condition of conjuncts(query['where'] as Node | undefined)) {
    if (condition['type'] !== 'Equal') continue;
    const [left, right] = condition['operand'] as [Node, Node];
    for (const [idSide, valueSide] of [
      [left, right],
      [right, left],
    ] as const) {
      if (!onlyIdOf(idSide, source.alias)) continue;
      const mentionsAlias = JSON.stringify(valueSide).includes(`"scope":${JSON.stringify(source.alias)}`);
      const depends = facts.of(valueSide, libraryKey);
      if (!mentionsAlias && !depends.retrieve && depends.parameter) {
        marked.add(source.expression);
        return;
      }
    }
  }
}

/**
 * What the requested defines can reach: the statements they depend on (across included libraries) and the FHIR
 * retrieves those statements make, with their code filters when known. Value set codes come from `expand`.
 */
export function dataRequirements(
  index: ElmIndex,
  requested: Array<{ library: string; define: string }>,
  expand: (valueSetUrl: string) => Array<{ system?: string; code: string }> | undefined,
): DataRequirements {
  const statements = new Map<string, Set<string>>();
  const retrieves: Retrieve[] = [];
  const queue: Array<{ library: string; name: string }> = requested.map((r) => ({
    library: r.library,
    name: r.define,
  }));

  const libraryId = (key: string): string => (index.get(key) as ElmFull | undefined)?.library.identifier.id ?? key;
  const facts = new DependencyFacts(index);
  const idMatched = new WeakSet<object>();

  while (queue.length > 0) {
    const { library: key, name } = queue.shift()!;
    const library = index.get(key) as ElmFull | undefined;
    if (!library) continue;
    const id = libraryId(key);
    const seen = statements.get(id) ?? new Set<string>();
    if (seen.has(name)) continue;
    seen.add(name);
    statements.set(id, seen);
    // Functions are overloaded by name: visit every overload.
    for (const def of library.library.statements?.def ?? []) {
      if (def.name !== name) continue;
      walk(def, (node) => {
        const type = node['type'];
        if (type === 'Query') markIdMatchedSource(node, key, facts, idMatched);
        if (type === 'ExpressionRef' || type === 'FunctionRef') {
          const alias = node['libraryName'] as string | undefined;
          const target = alias ? includeTarget(library, alias) : key;
          if (target) queue.push({ library: target, name: node['name'] as string });
        } else if (type === 'Retrieve') {
          const retrieve = retrieveOf(node, library, index, expand);
          retrieves.push(idMatched.has(node) && !retrieve.codes ? { ...retrieve, byReference: true } : retrieve);
        }
      });
    }
  }
  return { statements, retrieves };
}

function retrieveOf(
  node: Node,
  library: ElmFull,
  index: ElmIndex,
  expand: (url: string) => Array<{ system?: string; code: string }> | undefined,
): Retrieve {
  const dataType = String(node['dataType'] ?? '');
  const resourceType = dataType.replace(/^\{[^}]*\}/, '');
  const codes = node['codes'] as Node | undefined;
  if (!codes) return { resourceType };
  const fromLibrary = (alias: string | undefined): ElmFull | undefined => ownerOf(index, library, alias);
  if (codes['type'] === 'ValueSetRef') {
    const owner = fromLibrary(codes['libraryName'] as string | undefined);
    const url = owner?.library.valueSets?.def?.find((v) => v.name === codes['name'])?.id;
    if (!url) return { resourceType };
    const expanded = expand(url);
    return expanded
      ? { resourceType, codes: expanded, ...(url ? { valueSet: url } : {}) }
      : { resourceType, unresolvedValueSet: url };
  }
  // Direct codes: CodeRef, ToList(CodeRef), List of CodeRefs, Code literals, and defines made only of those
  // (`define "Oxygen_Codes": { "Oxygen [Partial pressure] in Arterial blood" }`).
  const found: Array<{ system?: string; code: string }> = [];
  let unknown = false;
  const seen = new Set<string>();
  const collect = (root: unknown, owner: ElmFull) =>
    walk(root, (n) => {
      if (n['type'] === 'ExpressionRef' && !unknown) {
        const defining = ownerOf(index, owner, n['libraryName'] as string | undefined);
        const def = defining?.library.statements?.def?.find(
          (d) => d.name === n['name'] && (d as Node)['type'] !== 'FunctionDef',
        );
        const key = `${defining?.library.identifier.id}.${String(n['name'])}`;
        if (!defining || !def || seen.has(key)) {
          unknown = true;
          return;
        }
        seen.add(key);
        collect((def as Node)['expression'], defining);
        return;
      }
      if (n['type'] === 'CodeRef') {
        const codeOwner = ownerOf(index, owner, n['libraryName'] as string | undefined);
        const def = codeOwner?.library.codes?.def?.find((c) => c.name === n['name']);
        const system = def?.codeSystem
          ? codeOwner?.library.codeSystems?.def?.find((s) => s.name === def.codeSystem!.name)?.id
          : undefined;
        if (def) found.push({ ...(system ? { system } : {}), code: def.id });
        else unknown = true;
      } else if (n['type'] === 'Code' && typeof n['code'] === 'string') {
        found.push({ code: n['code'] as string });
      } else if (
        n['type'] === 'ParameterRef' ||
        n['type'] === 'FunctionRef' ||
        n['type'] === 'ValueSetRef' ||
        n['type'] === 'Retrieve' ||
        n['type'] === 'Query'
      ) {
        unknown = true;
      }
    });
  collect(codes, library);
  return !unknown && found.length > 0 ? { resourceType, codes: found } : { resourceType };
}

function walk(node: unknown, visit: (node: Node) => void): void {
  const stack: unknown[] = [node];
  while (stack.length > 0) {
    const current = stack.pop();
    if (Array.isArray(current)) {
      for (const child of current) stack.push(child);
    } else if (current && typeof current === 'object') {
      visit(current as Node);
      for (const value of Object.values(current)) if (value && typeof value === 'object') stack.push(value);
    }
  }
}

/** Resource types that are not in the patient compartment: read by reference from the context, never searched. */
export const NON_COMPARTMENT_TYPES = new Set([
  'Practitioner',
  'PractitionerRole',
  'Organization',
  'Location',
  'Medication',
  'Device',
  'HealthcareService',
]);

export interface PlannedSearch {
  resourceType: string;
  params: Record<string, string>;
  /** For a `code:in` search: the same codes listed, for an EHR that does not support the modifier. */
  fallback?: PlannedSearch[];
}

/**
 * The minimum set of patient-scoped searches for the retrieves: one per type without a code filter when any
 * retrieve of that type needs everything, else code-filtered searches with the union of codes, chunked. With
 * `codeIn`, a retrieve filtered by a value set is one `code:in=<value set>` search instead of its codes listed (the
 * listed codes kept as its fallback).
 * @see https://hl7.org/fhir/R4/search.html#token (the :in modifier)
 */
export function planSearches(
  retrieves: Retrieve[],
  patientId: string,
  chunkSize = 500,
  options: { codeIn?: boolean } = {},
): PlannedSearch[] {
  const byType = new Map<
    string,
    {
      all: boolean;
      codes: Map<string, { system?: string; code: string }>;
      valueSets: Map<string, Array<{ system?: string; code: string }>>;
    }
  >();
  for (const retrieve of retrieves) {
    if (retrieve.resourceType === 'Patient' || NON_COMPARTMENT_TYPES.has(retrieve.resourceType) || retrieve.byReference)
      continue;
    const entry = byType.get(retrieve.resourceType) ?? { all: false, codes: new Map(), valueSets: new Map() };
    if (!retrieve.codes) entry.all = true;
    else if (options.codeIn && retrieve.valueSet) entry.valueSets.set(retrieve.valueSet, retrieve.codes);
    else for (const c of retrieve.codes) entry.codes.set(`${c.system ?? ''}|${c.code}`, c);
    byType.set(retrieve.resourceType, entry);
  }
  const listed = (resourceType: string, codes: Iterable<{ system?: string; code: string }>): PlannedSearch[] => {
    const tokens = [...new Set([...codes].map((c) => (c.system ? `${c.system}|${c.code}` : c.code)))].sort();
    const out: PlannedSearch[] = [];
    for (let i = 0; i < tokens.length; i += chunkSize)
      out.push({ resourceType, params: { patient: patientId, code: tokens.slice(i, i + chunkSize).join(',') } });
    return out;
  };
  const searches: PlannedSearch[] = [];
  for (const [resourceType, { all, codes, valueSets }] of [...byType].sort(([a], [b]) => a.localeCompare(b))) {
    if (all || (codes.size === 0 && valueSets.size === 0)) {
      searches.push({ resourceType, params: { patient: patientId } });
      continue;
    }
    searches.push(...listed(resourceType, codes.values()));
    for (const [url, vsCodes] of [...valueSets].sort(([a], [b]) => a.localeCompare(b))) {
      searches.push({
        resourceType,
        params: { patient: patientId, 'code:in': url },
        fallback: listed(resourceType, vsCodes),
      });
    }
  }
  return searches;
}

/**
 * Types whose every retrieve finds resources by id from the launch context: read by the references the context
 * resources hold (see `referencesTo`), never searched.
 */
export function typesReadByReference(retrieves: Retrieve[]): Set<string> {
  const types = new Set(retrieves.filter((r) => r.byReference).map((r) => r.resourceType));
  for (const r of retrieves) if (!r.byReference) types.delete(r.resourceType);
  return types;
}

/** References (`Type/id`) of the given types that the resources hold. */
export function referencesTo(resources: FhirResource[], types: Set<string>): string[] {
  const found = new Set<string>();
  for (const resource of resources) {
    walk(resource, (node) => {
      const ref = node['reference'];
      if (typeof ref === 'string') {
        const parsed = parseResourceReference(ref);
        if (parsed && types.has(parsed.type)) found.add(`${parsed.type}/${parsed.id}`);
      }
    });
  }
  return [...found].sort();
}

/** References (`Type/id`) to non-compartment resources that the context resources point at. */
export function referencedNonCompartment(resources: FhirResource[]): string[] {
  const found = new Set<string>();
  for (const resource of resources) {
    walk(resource, (node) => {
      const ref = node['reference'];
      if (typeof ref === 'string') {
        const parsed = parseResourceReference(ref);
        if (parsed && NON_COMPARTMENT_TYPES.has(parsed.type)) found.add(`${parsed.type}/${parsed.id}`);
      }
    });
  }
  return [...found].sort();
}
