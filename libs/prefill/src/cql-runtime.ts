import { createRequire } from 'node:module';
import cql from 'cql-execution';
import cqlfhir from 'cql-exec-fhir';
import type { FhirResource } from '@dtr/fhir';

export type FhirModelVersion = '4.0.0' | '4.0.1';

interface Runtime {
  source: InstanceType<typeof cqlfhir.PatientSource>;
  wrapper: InstanceType<typeof cqlfhir.FHIRWrapper>;
}

/**
 * cql-exec-fhir parses its model definitions (~300 ms) each time a PatientSource or FHIRWrapper is made: build
 * them once per process and model version, and reuse them (see STACK.md).
 */
const runtimes = new Map<FhirModelVersion, Runtime>();

function runtime(version: FhirModelVersion): Runtime {
  let found = runtimes.get(version);
  if (!found) {
    found =
      version === '4.0.0'
        ? { source: cqlfhir.PatientSource.FHIRv400(), wrapper: cqlfhir.FHIRWrapper.FHIRv400() }
        : { source: cqlfhir.PatientSource.FHIRv401(), wrapper: cqlfhir.FHIRWrapper.FHIRv401() };
    runtimes.set(version, found);
    installWrapperCaches(found.wrapper.wrap({ resourceType: 'Patient' }));
  }
  return found;
}

let fastPaths = true;

/** Turns the engine fast paths off (to compare answers with the plain engine) or back on. */
export function setEngineFastPaths(enabled: boolean): void {
  fastPaths = enabled;
}

type AnyFn = (...args: unknown[]) => unknown;
let wrapperCachesInstalled = false;

/**
 * Caches in cql-exec-fhir's data wrapper, installed around its methods (the package itself is unchanged):
 * - `FHIRObject.get(field)`: each access built a new wrapper tree for the child; the data never changes during a
 *   run, so the child is built once per object and field;
 * - `FHIRObject._typeHierarchy()`: recomputed on every type test; it depends only on the type info;
 * - `ModelInfo.findClass(name)`: string rewriting and map look-ups on every wrap; cached by name.
 * Each cache is consulted only while fast paths are on; answers are compared with and without them in tests.
 */
function installWrapperCaches(sample: object): void {
  if (wrapperCachesInstalled) return;
  wrapperCachesInstalled = true;
  const fhirObject = Object.getPrototypeOf(sample) as Record<string, AnyFn>;
  const originalGet = fhirObject['get']!;
  const values = new WeakMap<object, Map<string, unknown>>();
  fhirObject['get'] = function (this: object, ...args: unknown[]) {
    if (!fastPaths || typeof args[0] !== 'string') return originalGet.apply(this, args);
    let cache = values.get(this);
    if (!cache) values.set(this, (cache = new Map()));
    const field = args[0];
    if (cache.has(field)) return cache.get(field);
    const value = originalGet.apply(this, args);
    cache.set(field, value);
    return value;
  };
  const originalHierarchy = fhirObject['_typeHierarchy']!;
  const hierarchies = new WeakMap<object, unknown>();
  fhirObject['_typeHierarchy'] = function (this: { getTypeInfo(): object | null }, ...args: unknown[]) {
    const info = this.getTypeInfo();
    if (!fastPaths || !info) return originalHierarchy.apply(this, args);
    if (!hierarchies.has(info)) hierarchies.set(info, originalHierarchy.apply(this, args));
    return hierarchies.get(info);
  };
  const modelInfo = Object.getPrototypeOf((sample as { _modelInfo: object })._modelInfo) as Record<string, AnyFn>;
  const originalFindClass = modelInfo['findClass']!;
  const classes = new WeakMap<object, Map<string, unknown>>();
  modelInfo['findClass'] = function (this: object, ...args: unknown[]) {
    if (!fastPaths || typeof args[0] !== 'string') return originalFindClass.apply(this, args);
    let cache = classes.get(this);
    if (!cache) classes.set(this, (cache = new Map()));
    if (!cache.has(args[0])) cache.set(args[0], originalFindClass.apply(this, args));
    return cache.get(args[0]);
  };
  installResourceIdentity(fhirObject);
  installDateParseCache();
}

/**
 * `DateTime.parse` / `Date.parse` check every string's format by trying luxon formats (`fromFormat` builds a token
 * parser on each call), once for every date element read. The result depends only on the string: it is kept (up to
 * 20,000 strings, then the cache starts over) and a copy is handed out, since callers may adjust what they receive.
 */
function installDateParseCache(): void {
  for (const type of [cql.DateTime, cql.Date] as unknown as Array<{
    parse: (s: string | null) => { copy(): unknown } | null;
  }>) {
    const original = type.parse.bind(type);
    const parsed = new Map<string, { copy(): unknown } | null>();
    type.parse = (value: string | null) => {
      if (!fastPaths || typeof value !== 'string') return original(value);
      let result = parsed.get(value);
      if (result === undefined) {
        if (parsed.size >= 20_000) parsed.clear();
        result = original(value);
        parsed.set(value, result);
      }
      return (result?.copy() ?? null) as { copy(): unknown } | null;
    };
  }
}

interface Wrapped {
  _json?: { resourceType?: unknown; id?: unknown } | null;
}

/**
 * Resource identity fast paths in cql-execution's list operators (`union`, `except`, `intersect`, `distinct`, `in`):
 * they compare FHIR resources by deep value, walking every element through the data wrapper, which made one
 * `[Condition] except "RelevantConditions"` cost tens of milliseconds. For two wrapped resources (a JSON object with a
 * `resourceType` and an `id`):
 * - `equals`: the same JSON object is equal; a different type or id is not equal (deep equality compares `id` too, so
 *   the answer is the same); only same type and id with distinct JSON objects falls through to the deep comparison;
 * - `toNormalizedKey` (the key `distinct` hashes): type, id and the resource's JSON text, computed once per object, so
 *   two copies of one resource still collapse and different resources never do.
 * Both are replaced on the module exports the library's own operators read at each call; the library is unchanged.
 */
function installResourceIdentity(fhirObject: object): void {
  const require = createRequire(import.meta.url);
  const comparison = require('cql-execution/lib/util/comparison') as { equals: (a: unknown, b: unknown) => unknown };
  const keys = require('cql-execution/lib/util/immutableUtil') as { toNormalizedKey: (js: unknown) => unknown };
  // The Immutable instance cql-execution itself uses, so its sets hash our keys like their own.
  const { Map: ImmutableMap } = createRequire(require.resolve('cql-execution'))('immutable') as {
    Map: (entries: object) => unknown;
  };
  const resourceJson = (value: unknown): { resourceType: string; id: string } | undefined => {
    if (!value || typeof value !== 'object' || !fhirObject.isPrototypeOf(value)) return undefined;
    const json = (value as Wrapped)._json;
    return json && typeof json.resourceType === 'string' && typeof json.id === 'string'
      ? (json as { resourceType: string; id: string })
      : undefined;
  };
  const originalEquals = comparison.equals;
  comparison.equals = (a: unknown, b: unknown) => {
    if (fastPaths) {
      const left = resourceJson(a);
      const right = left ? resourceJson(b) : undefined;
      if (left && right) {
        if (left === right) return true;
        if (left.resourceType !== right.resourceType || left.id !== right.id) return false;
      }
    }
    return originalEquals(a, b);
  };
  const originalKey = keys.toNormalizedKey;
  const resourceKeys = new WeakMap<object, unknown>();
  keys.toNormalizedKey = (js: unknown) => {
    const json = fastPaths ? resourceJson(js) : undefined;
    if (!json) return originalKey(js);
    let key = resourceKeys.get(json);
    if (key === undefined) {
      key = ImmutableMap({
        __instance: 'FHIR resource',
        resourceType: json.resourceType,
        id: json.id,
        json: JSON.stringify(json),
      });
      resourceKeys.set(json, key);
    }
    return key;
  };
}

/** Loads the model definitions now (start-up of a worker or the CLI), so the first prefill is not the slow one. */
export function warmUp(versions: FhirModelVersion[] = ['4.0.0', '4.0.1']): void {
  for (const version of versions) runtime(version);
}

/**
 * The cql-execution patient for a bundle of one patient's resources. Synchronous: no interleaving.
 * With `fast`, retrieves are indexed: cql-exec-fhir scans the whole bundle and wraps every match anew on each
 * retrieve, though the result depends only on the resource type (profile tagging is off), so it is computed once.
 */
export function patientFor(version: FhirModelVersion, resources: FhirResource[], fast = fastPaths) {
  const { source } = runtime(version);
  source.reset();
  source.loadBundles([
    { resourceType: 'Bundle', type: 'collection', entry: resources.map((resource) => ({ resource })) },
  ]);
  const patient = source.currentPatient();
  source.reset();
  if (patient && fast) {
    const original = patient.findRecords.bind(patient);
    const byType = new Map<string, ReturnType<typeof original>>();
    patient.findRecords = (profile: string, details?: { datatype?: string }) => {
      const key = details?.datatype ?? profile;
      let records = byType.get(key);
      if (!records) {
        records = original(profile, details as never);
        byType.set(key, records);
      }
      return records.slice();
    };
  }
  return patient;
}

export function wrap(version: FhirModelVersion, resource: FhirResource) {
  return runtime(version).wrapper.wrap(resource);
}

interface CodeLike {
  code?: string;
  system?: string;
  codes?: unknown[];
}

/**
 * A value set whose membership test is a hash look-up on `system|code` instead of a scan of every code (VSAC
 * expansions run to hundreds of codes, tested once per resource). Same rule as cql-execution's codesMatch: code and
 * system equal, version ignored. The string overload keeps the library's own behaviour.
 */
class HashedValueSet extends cql.ValueSet {
  private readonly keys: Set<string>;

  constructor(oid: string, version: string | undefined, codes: InstanceType<typeof cql.Code>[]) {
    super(oid, version, codes);
    this.keys = new Set(codes.map((c) => `${c.system}|${c.code}`));
  }

  override hasMatch(code: unknown): boolean {
    if (code === null || code === undefined) return false;
    if (typeof code === 'string') return super.hasMatch(code);
    if (Array.isArray(code)) return code.some((c) => this.hasMatch(c));
    const c = code as CodeLike;
    if (Array.isArray(c.codes)) return c.codes.some((inner) => this.hasMatch(inner));
    return this.keys.has(`${c.system}|${c.code}`);
  }
}

export function codeService(valueSets: FhirResource[], fast = fastPaths) {
  const service = plainCodeService(valueSets);
  if (fast) {
    const byOid = service.valueSets as Record<string, Record<string, InstanceType<typeof cql.ValueSet>>>;
    for (const versions of Object.values(byOid)) {
      for (const [version, vs] of Object.entries(versions))
        versions[version] = new HashedValueSet(vs.oid, vs.version, vs.codes);
    }
  }
  return service;
}

function plainCodeService(valueSets: FhirResource[]) {
  const map: Record<string, Record<string, Array<{ code: string; system: string; version?: string }>>> = {};
  for (const valueSet of valueSets) {
    const url = valueSet['url'];
    if (typeof url !== 'string') continue;
    const codes = expansionOf(valueSet);
    if (!codes) continue;
    const version = typeof valueSet['version'] === 'string' ? valueSet['version'] : '';
    map[url] ??= {};
    map[url][version] = codes.map((c) => ({
      code: c.code,
      system: c.system ?? '',
      ...(c.version ? { version: c.version } : {}),
    }));
  }
  return new cql.CodeService(map);
}

/** Codes of a ValueSet: its expansion, or an enumerated compose (no filters). Undefined when neither. */
export function expansionOf(
  valueSet: FhirResource,
): Array<{ system?: string; code: string; version?: string }> | undefined {
  const expansion = valueSet['expansion'] as
    { contains?: Array<{ system?: string; code?: string; version?: string; contains?: unknown[] }> } | undefined;
  if (expansion?.contains) {
    const out: Array<{ system?: string; code: string; version?: string }> = [];
    const stack = [...expansion.contains];
    while (stack.length > 0) {
      const c = stack.pop() as { system?: string; code?: string; version?: string; contains?: unknown[] };
      if (c.code)
        out.push({
          ...(c.system ? { system: c.system } : {}),
          code: c.code,
          ...(c.version ? { version: c.version } : {}),
        });
      if (c.contains) stack.push(...(c.contains as typeof expansion.contains));
    }
    return out;
  }
  const compose = valueSet['compose'] as
    | {
        include?: Array<{
          system?: string;
          concept?: Array<{ code: string }>;
          filter?: unknown[];
          valueSet?: unknown[];
        }>;
      }
    | undefined;
  if (compose?.include && compose.include.every((i) => i.concept && !i.filter && !i.valueSet)) {
    return compose.include.flatMap((i) =>
      i.concept!.map((c) => ({ ...(i.system ? { system: i.system } : {}), code: c.code })),
    );
  }
  return undefined;
}

export { cql };
