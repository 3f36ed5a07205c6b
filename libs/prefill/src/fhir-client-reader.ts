import type { FhirClient, FhirResource } from '@dtr/fhir';
import { PatientDataReader } from './patient-data-reader.js';

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
    this.searches.push({ resourceType, params });
    const result = await this.client.search(resourceType, params, { maxPages: this.maxPages });
    return result.resources;
  }

  async read(resourceType: string, id: string): Promise<FhirResource | undefined> {
    this.reads.push(`${resourceType}/${id}`);
    return this.client.read(resourceType, id);
  }
}
