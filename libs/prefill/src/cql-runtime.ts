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
  }
  return found;
}

/** Loads the model definitions now (start-up of a worker or the CLI), so the first prefill is not the slow one. */
export function warmUp(versions: FhirModelVersion[] = ['4.0.0', '4.0.1']): void {
  for (const version of versions) runtime(version);
}

/** The cql-execution patient for a bundle of one patient's resources. Synchronous: no interleaving. */
export function patientFor(version: FhirModelVersion, resources: FhirResource[]) {
  const { source } = runtime(version);
  source.reset();
  source.loadBundles([{ resourceType: 'Bundle', type: 'collection', entry: resources.map((resource) => ({ resource })) }]);
  const patient = source.currentPatient();
  source.reset();
  return patient;
}

export function wrap(version: FhirModelVersion, resource: FhirResource) {
  return runtime(version).wrapper.wrap(resource);
}

export function codeService(valueSets: FhirResource[]) {
  const map: Record<string, Record<string, Array<{ code: string; system: string; version?: string }>>> = {};
  for (const valueSet of valueSets) {
    const url = valueSet['url'];
    if (typeof url !== 'string') continue;
    const codes = expansionOf(valueSet);
    if (!codes) continue;
    const version = typeof valueSet['version'] === 'string' ? valueSet['version'] : '';
    map[url] ??= {};
    map[url][version] = codes.map((c) => ({ code: c.code, system: c.system ?? '', ...(c.version ? { version: c.version } : {}) }));
  }
  return new cql.CodeService(map);
}

/** Codes of a ValueSet: its expansion, or an enumerated compose (no filters). Undefined when neither. */
export function expansionOf(valueSet: FhirResource): Array<{ system?: string; code: string; version?: string }> | undefined {
  const expansion = valueSet['expansion'] as { contains?: Array<{ system?: string; code?: string; version?: string; contains?: unknown[] }> } | undefined;
  if (expansion?.contains) {
    const out: Array<{ system?: string; code: string; version?: string }> = [];
    const stack = [...expansion.contains];
    while (stack.length > 0) {
      const c = stack.pop() as { system?: string; code?: string; version?: string; contains?: unknown[] };
      if (c.code) out.push({ ...(c.system ? { system: c.system } : {}), code: c.code, ...(c.version ? { version: c.version } : {}) });
      if (c.contains) stack.push(...(c.contains as typeof expansion.contains));
    }
    return out;
  }
  const compose = valueSet['compose'] as { include?: Array<{ system?: string; concept?: Array<{ code: string }>; filter?: unknown[]; valueSet?: unknown[] }> } | undefined;
  if (compose?.include && compose.include.every((i) => i.concept && !i.filter && !i.valueSet)) {
    return compose.include.flatMap((i) => i.concept!.map((c) => ({ ...(i.system ? { system: i.system } : {}), code: c.code })));
  }
  return undefined;
}

export { cql };
