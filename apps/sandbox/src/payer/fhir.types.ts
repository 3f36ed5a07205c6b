/** Just enough FHIR R4 shape for the sandbox payer; resources are otherwise passed through untouched. */
export interface FhirResource {
  resourceType: string;
  id?: string;
  url?: string;
  version?: string;
  meta?: { lastUpdated?: string; [k: string]: unknown };
  [k: string]: unknown;
}

export interface Coding {
  system?: string;
  code?: string;
  display?: string;
}

export interface ParametersParameter {
  name: string;
  resource?: FhirResource;
  valueCanonical?: string;
  valueString?: string;
  valueDateTime?: string;
  valueInstant?: string;
  valueUri?: string;
  valueIdentifier?: unknown;
  part?: ParametersParameter[];
  [k: string]: unknown;
}

export interface Parameters extends FhirResource {
  resourceType: 'Parameters';
  parameter?: ParametersParameter[];
}

export interface Bundle extends FhirResource {
  resourceType: 'Bundle';
  type: string;
  entry?: Array<{ fullUrl?: string; resource?: FhirResource }>;
}

export function isResource(value: unknown): value is FhirResource {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { resourceType?: unknown }).resourceType === 'string'
  );
}

export type IssueCode =
  | 'invalid'
  | 'required'
  | 'not-found'
  | 'forbidden'
  | 'login'
  | 'conflict'
  | 'processing'
  | 'informational'
  | 'exception'
  | 'business-rule';

export function operationOutcome(
  severity: 'error' | 'warning' | 'information',
  code: IssueCode,
  diagnostics: string,
): FhirResource {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] };
}

/** An error a handler raises to answer with `status` and an OperationOutcome (one place maps it to HTTP). */
export class PayerHttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: IssueCode,
    message: string,
  ) {
    super(message);
    this.name = 'PayerHttpError';
  }
}

/** Splits `url|version` into its parts. */
export function splitCanonical(canonical: string): { url: string; version?: string } {
  const bar = canonical.indexOf('|');
  return bar < 0 ? { url: canonical } : { url: canonical.slice(0, bar), version: canonical.slice(bar + 1) };
}
