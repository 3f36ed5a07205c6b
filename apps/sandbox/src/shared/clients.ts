import type { JSONWebKeySet } from 'jose';

/** A client registered with a sandbox authorization server (EHR or payer), from configuration. */
export interface SandboxClientConfig {
  clientId: string;
  auth: 'client_secret_basic' | 'private_key_jwt';
  /** For client_secret_basic. */
  clientSecret?: string;
  /** For private_key_jwt: where the client's public keys are fetched (loopback allowed in the sandbox). */
  jwksUri?: string;
  /** For private_key_jwt: inline keys instead of a URL. */
  jwks?: JSONWebKeySet;
  /** Exact redirect URIs (authorization code clients). */
  redirectUris?: string[];
  /** Scopes this client may be granted; default: every scope the server supports. */
  scopes?: string[];
  grantTypes?: Array<'authorization_code' | 'refresh_token' | 'client_credentials'>;
  /**
   * EHR only: this client may write the payer-bound copies (DocumentReference and Provenance). The EHR refuses those
   * writes from any other client, whatever its scopes (the two identities of DESIGN.md).
   */
  mayDisclose?: boolean;
}

/** The sandbox's URL layout: one origin per peer. */
export const EHR_PATHS = {
  fhir: '/fhir',
  auth: '/auth',
  smartConfiguration: '/fhir/.well-known/smart-configuration',
  launches: '/_sandbox/launches',
} as const;

export const PAYER_PATHS = {
  fhir: '/fhir',
  auth: '/auth',
  token: '/auth/token',
  submissions: '/_sandbox/submissions',
} as const;
