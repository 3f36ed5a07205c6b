import { type FhirResource, checkedBundleResources } from '@dtr/fhir';
import { expansionOf } from './cql-runtime.js';

/**
 * A reader's refusal when the EHR does not support the `:in` search modifier: the engine then lists the value set's
 * codes instead. A type, not a message to match (the prefill workers carry it across as `reason`).
 */
export class CodeInUnsupportedError extends Error {
  readonly reason = 'code-in-unsupported';
  constructor(detail?: string) {
    super(`code:in is not supported by this EHR${detail ? ` (${detail})` : ''}`);
    this.name = 'CodeInUnsupportedError';
  }
}

/**
 * Where the engine gets patient data: the EHR (through the session's FHIR client) or, offline, a bundle.
 * The engine says exactly what it needs; implementations must not widen it.
 */
export abstract class PatientDataReader {
  abstract search(resourceType: string, params: Record<string, string>): Promise<FhirResource[]>;
  abstract read(resourceType: string, id: string): Promise<FhirResource | undefined>;
}

const CODE_PATHS: Record<string, string[]> = {
  MedicationRequest: ['medicationCodeableConcept'],
  MedicationStatement: ['medicationCodeableConcept'],
  DeviceRequest: ['codeCodeableConcept'],
  Procedure: ['code'],
};

function codingsOf(resource: FhirResource): Array<{ system?: string; code?: string }> {
  const paths = CODE_PATHS[resource.resourceType] ?? ['code'];
  return paths.flatMap(
    (p) => (resource[p] as { coding?: Array<{ system?: string; code?: string }> } | undefined)?.coding ?? [],
  );
}

function subjectOf(resource: FhirResource): string | undefined {
  for (const key of ['subject', 'patient', 'beneficiary']) {
    const ref = (resource[key] as { reference?: string } | undefined)?.reference;
    // `Patient/x`, an absolute URL, or a versioned `Patient/x/_history/n`: the patient is `Patient/x`.
    if (ref) return ref.replace(/\/_history\/[^/]+$/, '').replace(/^.*\/(Patient\/[^/]+)$/, '$1');
  }
  return undefined;
}

/**
 * A reader over the resources of a patient bundle (the `dtr prefill` CLI, tests, benchmarks). It implements the
 * search parameters the engine uses: `patient`, `code` (`system|code` lists) and `_id`.
 */
export class BundleReader extends PatientDataReader {
  readonly searches: Array<{ resourceType: string; params: Record<string, string> }> = [];
  readonly reads: string[] = [];
  private readonly byType = new Map<string, FhirResource[]>();

  /**
   * @param options.valueSets value sets this reader expands for `code:in` searches (as an EHR with a terminology
   *   service would); without them it refuses `code:in` the way such an EHR does.
   */
  constructor(
    resources: FhirResource[],
    private readonly options: { valueSets?: FhirResource[] } = {},
  ) {
    super();
    for (const resource of resources) {
      const list = this.byType.get(resource.resourceType) ?? [];
      list.push(resource);
      this.byType.set(resource.resourceType, list);
    }
  }

  /**
   * Resources of a bundle, with `urn:uuid:` (and other fullUrl) references rewritten to `Type/id`, as a FHIR server
   * would have stored them (Synthea bundles reference by fullUrl).
   */
  static fromBundle(
    bundle: { entry?: Array<{ fullUrl?: string; resource?: FhirResource }> },
    options: { valueSets?: FhirResource[] } = {},
  ): BundleReader {
    // The bundle's structure is checked before it is indexed; each resource's elements are judged when it is read
    // (screenResource), where a malformed one is left out with an issue rather than refusing the whole bundle.
    const entries = checkedBundleResources(bundle, 'the patient bundle', 'INVALID_INPUT', {
      elements: 'envelope',
    }) as Array<{
      fullUrl?: string;
      resource: FhirResource;
    }>;
    const byFullUrl = new Map<string, string>();
    for (const e of entries)
      if (e.fullUrl && e.resource.id) byFullUrl.set(e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`);
    // A one-patient bundle whose subjects point at a urn:uuid that no entry carries: they mean its patient.
    const patients = entries.filter((e) => e.resource.resourceType === 'Patient' && e.resource.id);
    const onlyPatient = patients.length === 1 ? `Patient/${patients[0]!.resource.id}` : undefined;
    const rewrite = (value: unknown, parentKey?: string): unknown => {
      if (Array.isArray(value)) return value.map((v) => rewrite(v, parentKey));
      if (value && typeof value === 'object') {
        const out: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(value)) {
          if (k === 'reference' && typeof v === 'string' && (byFullUrl.has(v) || v.startsWith('urn:uuid:'))) {
            out[k] =
              byFullUrl.get(v) ??
              (onlyPatient && ['subject', 'patient', 'beneficiary'].includes(parentKey ?? '') ? onlyPatient : v);
          } else {
            out[k] = rewrite(v, k);
          }
        }
        return out;
      }
      return value;
    };
    return new BundleReader(
      entries.map((e) => rewrite(e.resource) as FhirResource),
      options,
    );
  }

  resourcesOfType(resourceType: string): FhirResource[] {
    return this.byType.get(resourceType) ?? [];
  }

  /** Every resource the reader holds, by type. */
  all(): FhirResource[] {
    return [...this.byType.values()].flat();
  }

  async search(resourceType: string, params: Record<string, string>): Promise<FhirResource[]> {
    this.searches.push({ resourceType, params });
    let result = this.resourcesOfType(resourceType);
    if (params['patient']) {
      const patient = `Patient/${params['patient'].replace(/^Patient\//, '')}`;
      result = result.filter((r) =>
        resourceType === 'Patient' ? `Patient/${r.id}` === patient : subjectOf(r) === patient,
      );
    }
    if (params['_id']) {
      const ids = new Set(params['_id'].split(','));
      result = result.filter((r) => r.id && ids.has(r.id));
    }
    const codeIn = params['code:in'];
    if (codeIn !== undefined) {
      const valueSet = this.options.valueSets?.find((v) => v['url'] === codeIn.split('|')[0]);
      if (!valueSet) throw new CodeInUnsupportedError(`400: code:in ${codeIn}`);
      const members = new Set((expansionOf(valueSet) ?? []).map((c) => `${c.system ?? ''}|${c.code}`));
      result = result.filter((r) => codingsOf(r).some((c) => members.has(`${c.system ?? ''}|${c.code}`)));
    }
    if (params['code']) {
      const wanted = params['code'].split(',').map((token) => {
        const bar = token.indexOf('|');
        return bar >= 0
          ? { system: token.slice(0, bar), code: token.slice(bar + 1) }
          : { system: undefined, code: token };
      });
      result = result.filter((r) =>
        codingsOf(r).some((c) =>
          wanted.some((w) => w.code === c.code && (w.system === undefined || w.system === c.system)),
        ),
      );
    }
    return result;
  }

  async read(resourceType: string, id: string): Promise<FhirResource | undefined> {
    this.reads.push(`${resourceType}/${id}`);
    return this.resourcesOfType(resourceType).find((r) => r.id === id);
  }
}
