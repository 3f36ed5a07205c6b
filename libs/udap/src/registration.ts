import { DtrError } from '@dtr/kernel';
import type { JWTPayload } from 'jose';
import { placeOf, quotePeer, readJson, send } from './udap-http.js';
import { signUdapJwt } from './udap-jwt.js';
import type { DiscoveredUdapServer, SoftwareStatementInput, UdapRegistration } from './udap.types.js';

const invalid = (message: string) => new DtrError('INVALID_INPUT', message);

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** An absolute https URL (http only on loopback, for the sandbox), else a refusal naming `what`. */
function httpsUrl(value: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(`${what} ${quotePeer(value)} is not an absolute URL`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname)))
    throw invalid(`${what} ${value} must use https`);
  return url;
}

/**
 * The grant-dependent claims: `authorization_code` (with `refresh_token`, which the IG allows only beside it) needs
 * https `redirect_uris` and a PNG/JPG/GIF `logo_uri` and has `response_types: ["code"]`; `client_credentials` has
 * neither redirect URIs nor response types; `cancel` sends an empty `grant_types`.
 * @see https://hl7.org/fhir/us/udap-security/registration.html#software-statement
 */
function grantClaims(input: SoftwareStatementInput): JWTPayload {
  if (input.grantType === 'cancel') return { grant_types: [] };
  if (input.grantType === 'client_credentials') {
    if (input.redirectUris?.length)
      throw invalid('redirect URIs are for the authorization_code grant; a client_credentials statement has none');
    return {
      grant_types: ['client_credentials'],
      ...(input.logoUri ? { logo_uri: httpsUrl(input.logoUri, 'the logo URI').href } : {}),
    };
  }
  if (input.grantType !== 'authorization_code') throw invalid(`unknown grant type ${quotePeer(input.grantType)}`);
  if (!input.redirectUris?.length) throw invalid('an authorization_code registration needs at least one redirect URI');
  if (!input.logoUri) throw invalid('an authorization_code registration needs a logo URI (the server may show it)');
  const logo = httpsUrl(input.logoUri, 'the logo URI');
  if (!/\.(png|jpe?g|gif)$/i.test(logo.pathname))
    throw invalid(`the logo URI ${logo.href} must reference a PNG, JPG or GIF file`);
  return {
    grant_types: input.refreshToken === false ? ['authorization_code'] : ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: input.redirectUris.map((uri) => httpsUrl(uri, 'the redirect URI').href),
    logo_uri: logo.href,
  };
}

/**
 * Our signed software statement for a UDAP registration request: header `alg` and `x5c`; `iss` = `sub` = the
 * identity's SAN URI; `aud` = the registration endpoint exactly as the server's metadata gave it; `exp` = `iat` + 5
 * minutes; a fresh `jti`; the client's name, `mailto:` contacts, grant types, `token_endpoint_auth_method:
 * "private_key_jwt"` and the requested scopes.
 * @see https://hl7.org/fhir/us/udap-security/registration.html#software-statement
 * @see https://www.udap.org/udap-dynamic-client-registration-stu1.html#section-2
 */
export async function signSoftwareStatement(input: SoftwareStatementInput): Promise<string> {
  httpsUrl(input.registrationEndpoint, 'the registration endpoint');
  if (!input.clientName?.trim()) throw invalid('a software statement needs a client name');
  if (!input.contacts?.some((c) => /^mailto:[^@\s]+@[^@\s]+$/.test(c)))
    throw invalid('a software statement needs at least one contact e-mail address as a mailto: URI');
  if (typeof input.scope !== 'string') throw invalid('a software statement needs the requested scopes');
  const claims: JWTPayload = {
    iss: input.identity.sanUri,
    sub: input.identity.sanUri,
    aud: input.registrationEndpoint,
    client_name: input.clientName,
    contacts: [...input.contacts],
    ...grantClaims(input),
    token_endpoint_auth_method: 'private_key_jwt',
    scope: input.scope,
  };
  return signUdapJwt(input.identity, claims, input.now ?? new Date());
}

/**
 * Registers (or modifies, or with a `cancel` statement cancels) our client at a UDAP server: POST JSON
 * `{ software_statement, certifications: [], udap: "1" }` to its registration endpoint. 201 (new) or 200 (modified)
 * gives the `client_id` and the metadata the server granted (it may differ from what we asked); an answer with an
 * empty `grant_types` confirms a cancellation. An OAuth error answer (RFC 7591 §3.2.2) fails with UPSTREAM_ERROR
 * quoting the server's `error` and `error_description`, its HTTP status in `details.status`.
 * @see https://hl7.org/fhir/us/udap-security/registration.html#request-body
 * @see https://hl7.org/fhir/us/udap-security/registration.html#modifying-and-cancelling-registrations
 */
export async function registerUdapClient(
  server: Pick<DiscoveredUdapServer, 'registrationEndpoint'>,
  input: SoftwareStatementInput,
  options: { fetch: typeof fetch },
): Promise<UdapRegistration> {
  if (input.registrationEndpoint !== server.registrationEndpoint)
    throw invalid('the software statement must be addressed (aud) to the registration endpoint it is posted to');
  const url = server.registrationEndpoint;
  const softwareStatement = await signSoftwareStatement(input);
  const response = await send(options.fetch, url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ software_statement: softwareStatement, certifications: [], udap: '1' }),
    redirect: 'manual',
  });
  const body = await readJson(response, url).catch((error: unknown) => {
    if (response.ok) throw error;
    return undefined;
  });
  const place = placeOf(url);
  if (response.status !== 200 && response.status !== 201) throw refusalOf(response.status, body, place);
  if (!isObject(body) || typeof body['client_id'] !== 'string' || body['client_id'] === '')
    throw new DtrError('UPSTREAM_ERROR', `${place} answered ${response.status} without a client_id`, {
      details: { status: response.status },
    });
  const { software_statement: _echo, ...granted } = body;
  const grantTypes = granted['grant_types'];
  const cancelled = Array.isArray(grantTypes) && grantTypes.length === 0;
  if (input.grantType === 'cancel' && !cancelled)
    throw new DtrError(
      'UPSTREAM_ERROR',
      `${place} answered the cancellation without confirming it (its answer's grant_types is not empty): the registration may still be active`,
      { details: { status: response.status } },
    );
  return { clientId: body['client_id'], granted, status: cancelled ? 'cancelled' : 'registered' };
}

function refusalOf(status: number, body: unknown, place: string): DtrError {
  const error = isObject(body) && typeof body['error'] === 'string' ? body['error'] : undefined;
  if (error === undefined)
    return new DtrError('UPSTREAM_ERROR', `${place} answered the registration with HTTP ${status}`, {
      details: { status },
    });
  const description = isObject(body) ? body['error_description'] : undefined;
  return new DtrError(
    'UPSTREAM_ERROR',
    `${place} refused the registration (HTTP ${status}): ${quotePeer(error)}` +
      (typeof description === 'string' && description ? ` ${quotePeer(description)}` : ''),
    { details: { status, error: quotePeer(error).slice(1, -1) } },
  );
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
