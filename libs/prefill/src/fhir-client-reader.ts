import type { FhirClient, FhirResource } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';
import { CodeInUnsupportedError, PatientDataReader } from './patient-data-reader.js';

/** Per EHR base: whether it answered a `:in` search (true) or refused the modifier (false); bounded. */
const codeInSupport = new Map<string, boolean>();
function remember(base: string, supported: boolean): void {
  if (codeInSupport.size > 1000) codeInSupport.clear();
  codeInSupport.set(base, supported);
}

/** Patient data from a FHIR server (the EHR, with the session's token), with a record of what was asked. */
export class FhirClientReader extends PatientDataReader {
  readonly searches: Array<{ resourceType: string; params: Record<string, string> }> = [];
  readonly reads: string[] = [];

  constructor(
    private readonly client: FhirClient,
    private readonly maxPages = 10,
  ) {
    super();
  }

  async search(resourceType: string, params: Record<string, string>): Promise<FhirResource[]> {
    const codeIn = Object.keys(params).some((k) => k.endsWith(':in'));
    const base = this.client.baseUrl;
    // An EHR that refused `:in` once is not asked again (servers must reject modifiers they do not support).
    if (codeIn && codeInSupport.get(base) === false) throw new CodeInUnsupportedError();
    this.searches.push({ resourceType, params });
    try {
      const result = await this.client.search(resourceType, params, { maxPages: this.maxPages });
      if (codeIn) remember(base, true);
      return result.resources;
    } catch (error) {
      const status = error instanceof DtrError ? Number(error.details['status']) : NaN;
      // 400 (or 404/501 for an unknown modifier); not an authorization failure, not a server fault.
      if (codeIn && [400, 404, 422, 501].includes(status)) {
        remember(base, false);
        throw new CodeInUnsupportedError((error as Error).message);
      }
      throw error;
    }
  }

  async read(resourceType: string, id: string): Promise<FhirResource | undefined> {
    this.reads.push(`${resourceType}/${id}`);
    return this.client.read(resourceType, id);
  }
}
