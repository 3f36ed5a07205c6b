import { randomBytes } from 'node:crypto';
import type { IssuedCertificate } from '@dtr/udap';
import { SignJWT, importPKCS8 } from 'jose';

/**
 * A UDAP client written from the wire format alone (for the sandbox's own tests): software statements and
 * authentication tokens signed with a certificate's key, `x5c` in the header.
 */
export async function signUdapJwt(
  cert: Pick<IssuedCertificate, 'privateKeyPem' | 'x5c'>,
  claims: Record<string, unknown>,
  options: { lifetime?: number; iat?: number; x5c?: string[] } = {},
): Promise<string> {
  const key = await importPKCS8(cert.privateKeyPem, 'RS256');
  const iat = options.iat ?? Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: randomBytes(16).toString('hex'), ...claims })
    .setProtectedHeader({ alg: 'RS256', x5c: options.x5c ?? cert.x5c })
    .setIssuedAt(iat)
    .setExpirationTime(iat + (options.lifetime ?? 300))
    .sign(key);
}

/** POST a registration request to `endpoint`; the status and JSON answer. */
export async function register(
  endpoint: string,
  softwareStatement: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ software_statement: softwareStatement, udap: '1' }),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as Record<string, unknown> };
}

/** The claims of a client_credentials software statement for `san` at `endpoint`. */
export function b2bStatement(san: string, endpoint: string, extra: Record<string, unknown> = {}) {
  return {
    iss: san,
    sub: san,
    aud: endpoint,
    client_name: 'DTR test client',
    contacts: ['mailto:ops@example.org'],
    grant_types: ['client_credentials'],
    token_endpoint_auth_method: 'private_key_jwt',
    scope: 'system/Questionnaire.rs system/Library.rs system/ValueSet.rs',
    ...extra,
  };
}

/** A token request with a UDAP authentication token; the status and JSON answer. */
export async function tokenRequest(
  tokenEndpoint: string,
  params: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(tokenEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as Record<string, unknown> };
}

export const HL7_B2B = {
  'hl7-b2b': {
    version: '1',
    organization_id: 'https://dtr.example.org/organizations/1',
    purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
  },
};

export const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
