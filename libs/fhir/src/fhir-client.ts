import { DtrError } from '@dtr/kernel';
import { isFhirId, isResourceType } from './reference.js';

/** The smallest resource shape we rely on; full types come from @medplum/fhirtypes where needed. */
export interface FhirResource {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string; security?: Array<{ system?: string; code?: string }> };
  [key: string]: unknown;
}

export interface Bundle<T extends FhirResource = FhirResource> extends FhirResource {
  resourceType: 'Bundle';
  type?: string;
  total?: number;
  link?: Array<{ relation: string; url: string }>;
  entry?: Array<{
    fullUrl?: string;
    resource?: T;
    search?: { mode?: string };
    response?: { status?: string; location?: string };
  }>;
}

export type SearchParams = Record<string, string | string[]>;

export interface SearchOptions {
  /** Stop following `next` links after this many pages (default 20). */
  maxPages?: number;
}

export interface SearchResult<T extends FhirResource> {
  resources: T[];
  /** Included resources (`search.mode = include`) and OperationOutcomes, kept apart from matches. */
  included: FhirResource[];
  pages: number;
  /** True when `maxPages` stopped the paging before the last page. */
  truncated: boolean;
}

/**
 * A FHIR R4 server as seen by this application (the EHR, or a payer). A port: an HTTP implementation and an
 * in-memory fake implement it. Implementations send credentials only to their own base URL.
 */
export abstract class FhirClient {
  abstract readonly baseUrl: string;
  abstract read<T extends FhirResource = FhirResource>(resourceType: string, id: string): Promise<T | undefined>;
  abstract search<T extends FhirResource = FhirResource>(
    resourceType: string,
    params?: SearchParams,
    options?: SearchOptions,
  ): Promise<SearchResult<T>>;
  abstract create<T extends FhirResource>(resource: T, options?: { ifNoneExist?: string }): Promise<T>;
  abstract update<T extends FhirResource>(resource: T, options?: { ifMatch?: string }): Promise<T>;
  /** POST `[base]/<path>` (an operation such as `Questionnaire/$questionnaire-package`). */
  abstract operation<T = unknown>(path: string, body: unknown, options?: { idempotent?: boolean }): Promise<T>;
}

/** A FHIR `id` (R4: [A-Za-z0-9\-\.]{1,64}). */
export function assertFhirId(id: string, what = 'id'): void {
  if (!isFhirId(id)) throw new DtrError('INVALID_INPUT', `${what} is not a valid FHIR id`);
}

export function assertResourceType(type: string): void {
  if (!isResourceType(type)) throw new DtrError('INVALID_INPUT', `${type} is not a FHIR resource type`);
}
