import { DtrError } from '@dtr/kernel';
import type { JWTPayload } from 'jose';
import type { ClientAuth } from 'openid-client';
import { signUdapJwt } from './udap-jwt.js';
import type { B2bExtension, ClientAssertionInput } from './udap.types.js';

const invalid = (message: string) => new DtrError('INVALID_INPUT', message);

const isUri = (value: unknown): value is string =>
  typeof value === 'string' && /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/.test(value);

/**
 * The `hl7-b2b` Authorization Extension Object: `version` "1", `organization_id` (a URI), `purpose_of_use` (one or
 * more codes) and, when given, the organization's name, the requestor (`subject_*`) and consent policy and references.
 * @see https://hl7.org/fhir/us/udap-security/b2b.html#b2b-authorization-extension-object
 */
function hl7B2b(b2b: B2bExtension): Record<string, unknown> {
  if (!isUri(b2b.organizationId))
    throw invalid(
      `the B2B organization id must be a URI (e.g. https://… or urn:oid:…#…), not ${JSON.stringify(b2b.organizationId)}`,
    );
  if (
    !Array.isArray(b2b.purposeOfUse) ||
    b2b.purposeOfUse.length === 0 ||
    !b2b.purposeOfUse.every((p) => typeof p === 'string' && p !== '')
  )
    throw invalid('a B2B token request needs at least one purpose of use (e.g. urn:oid:2.16.840.1.113883.5.8#TREAT)');
  if (b2b.consentReference?.length && !b2b.consentPolicy?.length)
    throw invalid('consent references go with a consent policy: give the policy too');
  if (b2b.consentReference && !b2b.consentReference.every((r) => /^https?:\/\//.test(r)))
    throw invalid('consent references must be absolute URLs the server can resolve');
  return {
    version: '1',
    ...(b2b.subjectName ? { subject_name: b2b.subjectName } : {}),
    ...(b2b.subjectId ? { subject_id: b2b.subjectId } : {}),
    ...(b2b.subjectRole ? { subject_role: b2b.subjectRole } : {}),
    organization_id: b2b.organizationId,
    ...(b2b.organizationName ? { organization_name: b2b.organizationName } : {}),
    purpose_of_use: [...b2b.purposeOfUse],
    ...(b2b.consentPolicy?.length ? { consent_policy: [...b2b.consentPolicy] } : {}),
    ...(b2b.consentReference?.length ? { consent_reference: [...b2b.consentReference] } : {}),
  };
}

/**
 * A UDAP Authentication Token for the token endpoint: header `alg` and `x5c`; `iss` = `sub` = our client_id; `aud` =
 * the token endpoint exactly as the server's metadata gave it; `exp` = `iat` + 300 s (the IG's maximum); a fresh
 * `jti`; with `b2b` (client_credentials) the `hl7-b2b` extension, omitted for authorization_code.
 * @see https://hl7.org/fhir/us/udap-security/b2b.html#constructing-an-authentication-token
 * @see https://www.udap.org/udap-jwt-client-auth-stu1.html#section-4
 */
export async function signUdapClientAssertion(input: ClientAssertionInput): Promise<string> {
  if (typeof input.clientId !== 'string' || input.clientId === '')
    throw invalid('a UDAP authentication token needs the client_id the server assigned at registration');
  if (!isUri(input.tokenEndpoint)) throw invalid('a UDAP authentication token needs the token endpoint URL');
  const claims: JWTPayload = {
    iss: input.clientId,
    sub: input.clientId,
    aud: input.tokenEndpoint,
    ...(input.b2b ? { extensions: { 'hl7-b2b': hl7B2b(input.b2b) } } : {}),
  };
  return signUdapJwt(input.identity, claims, input.now ?? new Date());
}

/**
 * openid-client client authentication for a UDAP-registered client: each token request (code exchange, refresh,
 * client_credentials) carries a freshly signed Authentication Token (new `jti`, `iat` now) as `client_assertion`,
 * `client_assertion_type` jwt-bearer and `udap=1`, and never an Authorization header or client secret.
 * @see https://hl7.org/fhir/us/udap-security/b2b.html#token-request
 * @see https://hl7.org/fhir/us/udap-security/b2b.html#token-request-1
 */
export function udapClientAuth(input: Omit<ClientAssertionInput, 'now'>): ClientAuth {
  // openid-client awaits the authentication hook, though its type says void.
  return (async (_as, _client, body, headers) => {
    headers.delete('authorization');
    body.delete('client_secret');
    body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    body.set('client_assertion', await signUdapClientAssertion(input));
    body.set('udap', '1');
  }) as ClientAuth;
}
