import type { ElmLibrary, FhirResource } from '@dtr/fhir';

/** ELM libraries by identifier (`id` or `id|version`). */
export type ElmIndex = Map<string, ElmLibrary>;

export interface Retrieve {
  resourceType: string;
  /** Codes the retrieve filters on, when they can be known before running (value set expansion or direct codes). */
  codes?: Array<{ system?: string; code: string }>;
  /** A value set whose codes are not available here: the retrieve cannot be narrowed by code. */
  unresolvedValueSet?: string;
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
  const queue: Array<{ library: string; name: string }> = requested.map((r) => ({ library: r.library, name: r.define }));

  const libraryId = (key: string): string => (index.get(key) as ElmFull | undefined)?.library.identifier.id ?? key;

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
        if (type === 'ExpressionRef' || type === 'FunctionRef') {
          const alias = node['libraryName'] as string | undefined;
          const target = alias ? includeTarget(library, alias) : key;
          if (target) queue.push({ library: target, name: node['name'] as string });
        } else if (type === 'Retrieve') {
          retrieves.push(retrieveOf(node, library, index, expand));
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
  const fromLibrary = (alias: string | undefined): ElmFull | undefined => {
    if (!alias) return library;
    const target = includeTarget(library, alias);
    return target ? (index.get(target) as ElmFull | undefined) : undefined;
  };
  if (codes['type'] === 'ValueSetRef') {
    const owner = fromLibrary(codes['libraryName'] as string | undefined);
    const url = owner?.library.valueSets?.def?.find((v) => v.name === codes['name'])?.id;
    if (!url) return { resourceType };
    const expanded = expand(url);
    return expanded ? { resourceType, codes: expanded } : { resourceType, unresolvedValueSet: url };
  }
  // Direct codes: CodeRef, ToList(CodeRef), List of CodeRefs, Code literals.
  const found: Array<{ system?: string; code: string }> = [];
  let unknown = false;
  walk(codes, (n) => {
    if (n['type'] === 'CodeRef') {
      const owner = fromLibrary(n['libraryName'] as string | undefined);
      const def = owner?.library.codes?.def?.find((c) => c.name === n['name']);
      const system = def?.codeSystem ? owner?.library.codeSystems?.def?.find((s) => s.name === def.codeSystem!.name)?.id : undefined;
      if (def) found.push({ ...(system ? { system } : {}), code: def.id });
      else unknown = true;
    } else if (n['type'] === 'Code' && typeof n['code'] === 'string') {
      found.push({ code: n['code'] as string });
    } else if (n['type'] === 'ExpressionRef' || n['type'] === 'ParameterRef' || n['type'] === 'FunctionRef') {
      unknown = true;
    }
  });
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
export const NON_COMPARTMENT_TYPES = new Set(['Practitioner', 'PractitionerRole', 'Organization', 'Location', 'Medication', 'Device', 'HealthcareService']);

export interface PlannedSearch {
  resourceType: string;
  params: Record<string, string>;
}

/**
 * The minimum set of patient-scoped searches for the retrieves: one per type without a code filter when any
 * retrieve of that type needs everything, else code-filtered searches with the union of codes, chunked.
 */
export function planSearches(retrieves: Retrieve[], patientId: string, chunkSize = 40): PlannedSearch[] {
  const byType = new Map<string, { all: boolean; codes: Map<string, { system?: string; code: string }> }>();
  for (const retrieve of retrieves) {
    if (retrieve.resourceType === 'Patient' || NON_COMPARTMENT_TYPES.has(retrieve.resourceType)) continue;
    const entry = byType.get(retrieve.resourceType) ?? { all: false, codes: new Map() };
    if (!retrieve.codes) entry.all = true;
    else for (const c of retrieve.codes) entry.codes.set(`${c.system ?? ''}|${c.code}`, c);
    byType.set(retrieve.resourceType, entry);
  }
  const searches: PlannedSearch[] = [];
  for (const [resourceType, { all, codes }] of [...byType].sort(([a], [b]) => a.localeCompare(b))) {
    if (all || codes.size === 0) {
      searches.push({ resourceType, params: { patient: patientId } });
      continue;
    }
    const tokens = [...codes.values()].map((c) => (c.system ? `${c.system}|${c.code}` : c.code)).sort();
    for (let i = 0; i < tokens.length; i += chunkSize) {
      searches.push({ resourceType, params: { patient: patientId, code: tokens.slice(i, i + chunkSize).join(',') } });
    }
  }
  return searches;
}

/** References (`Type/id`) to non-compartment resources that the context resources point at. */
export function referencedNonCompartment(resources: FhirResource[]): string[] {
  const found = new Set<string>();
  for (const resource of resources) {
    walk(resource, (node) => {
      const ref = node['reference'];
      if (typeof ref === 'string') {
        const match = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(ref);
        if (match && NON_COMPARTMENT_TYPES.has(match[1]!)) found.add(`${match[1]}/${match[2]}`);
      }
    });
  }
  return [...found].sort();
}
