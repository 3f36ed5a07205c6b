/** What a sandbox authorization server knows about an access token it issued. */
export interface AccessTokenInfo {
  clientId: string;
  /** Granted scopes, as strings (`patient/Observation.rs`, `user/*.read`, `system/Questionnaire.rs`, …). */
  scopes: string[];
  /** Patient in context (patient-level scopes are limited to this patient's compartment). */
  patient?: string;
  encounter?: string;
  /** `Practitioner/123` style reference of the signed-in user, when the token came from a user login. */
  fhirUser?: string;
  /** Audience (resource server base URL) the token was issued for. */
  audience?: string;
  /** Expiry, epoch seconds. */
  expiresAt: number;
}

/** Looks a bearer token up; undefined when unknown, expired or revoked. */
export type IntrospectAccessToken = (token: string) => Promise<AccessTokenInfo | undefined>;
