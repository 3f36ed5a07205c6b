import * as oidc from 'openid-client';
import { boundedFetch } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';
import { type B2bExtension, type UdapIdentity, udapClientAuth } from '@dtr/udap';
import { outboundFetch } from './outbound-fetch.js';
import type { SigningAlg } from './tenants/tenant.types.js';
import type { RegistrationCredentials } from './tenants/tenant-registry.service.js';
import { isLoopback, limitsOf, type OutboundPolicy } from './outbound-policy.js';
import type { SmartConfiguration } from './smart-configuration.js';

/** The private-key type openid-client signs with (a WebCrypto CryptoKey). */
export type SigningCryptoKey = Extract<Parameters<typeof oidc.PrivateKeyJwt>[0], { key: unknown }>['key'];

/** Our private signing keys as a port (SigningKeyStore implements it); a key never leaves the process. */
export abstract class ClientKeyProvider {
  abstract privateKey(alg: SigningAlg): Promise<{ key: SigningCryptoKey; kid: string }>;
}

/**
 * HTTP Basic client authentication with the credentials encoded as RFC 6749 §2.3.1 describes, but leaving
 * unreserved characters alone. openid-client also percent-encodes `-`, `.`, `_`, `~` (and `!*'()`), which
 * servers that do not decode the Basic credentials reject; ids like `dtr-supplement` must work everywhere.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-2.3.1
 */
export function clientSecretBasic(clientId: string, clientSecret: string): oidc.ClientAuth {
  const encode = (value: string) => encodeURIComponent(value).replace(/%20/g, '+');
  const credentials = Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString('base64');
  return (_as, _client, _body, headers) => {
    headers.set('authorization', `Basic ${credentials}`);
  };
}

/**
 * private_key_jwt the way SMART wants it: header `typ: JWT` and `kid`; `aud` = the token endpoint URL;
 * `exp` at most 5 minutes ahead; unique `jti` (openid-client adds `jti`, `iat`, `exp` = iat + 60 s).
 * @see https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html#authenticating-to-the-token-endpoint
 */
export function privateKeyJwt(key: SigningCryptoKey, kid: string, tokenEndpoint: string): oidc.ClientAuth {
  return oidc.PrivateKeyJwt(
    { key, kid },
    {
      [oidc.modifyAssertion]: (header, payload) => {
        header['typ'] = 'JWT';
        header['kid'] = kid;
        payload['aud'] = tokenEndpoint;
        const now = Math.floor(Date.now() / 1000);
        if (typeof payload['exp'] !== 'number' || payload['exp'] > now + 300) payload['exp'] = now + 240;
      },
    },
  );
}

/** Our UDAP identities (UdapIdentityStore implements it): the certificate and key that sign as a SAN URI. */
export abstract class UdapIdentityProvider {
  abstract identityFor(sanUri: string): Promise<UdapIdentity>;
}

/** What UDAP client authentication needs beyond the registration: our identities, and the B2B extension's facts. */
export interface UdapClientOptions {
  identities: UdapIdentityProvider;
  /** Our organization and purpose of use, sent as `hl7-b2b` with client_credentials token requests. */
  b2b: B2bExtension;
}

/**
 * UDAP JWT client authentication: a client assertion signed with the certificate of the registration's SAN URI
 * (`x5c` header, `udap=1`), with the `hl7-b2b` extension when the grant is client_credentials.
 * @see https://hl7.org/fhir/us/udap-security/b2b.html#submitting-a-token-request
 */
export async function udapAuth(
  udap: UdapClientOptions | undefined,
  credentials: { clientId: string; udapSan?: string | undefined },
  tokenEndpoint: string,
  grant: 'authorization_code' | 'client_credentials',
): Promise<oidc.ClientAuth> {
  if (!credentials.udapSan) throw new DtrError('CONFIGURATION', 'udap registration without a SAN URI');
  if (!udap) throw new DtrError('CONFIGURATION', 'UDAP client authentication is not configured in this process');
  const identity = await udap.identities.identityFor(credentials.udapSan);
  return udapClientAuth({
    identity,
    clientId: credentials.clientId,
    tokenEndpoint,
    ...(grant === 'client_credentials' ? { b2b: udap.b2b } : {}),
  });
}

export interface SmartClientOptions {
  policy: OutboundPolicy;
  keys: ClientKeyProvider;
  /** UDAP client authentication, for registrations with auth method `udap`. */
  udap?: UdapClientOptions;
  /** Injectable for tests and for outbound request policy. */
  fetch?: typeof fetch;
  timeoutMs?: number;
}

/**
 * Takes the id_token out of a token endpoint's JSON answer and hands it to `onIdToken`: we check id_tokens ourselves
 * (IdTokenVerifier), also for EHRs whose smart-configuration has no `issuer`/`jwks_uri`, which openid-client
 * cannot do. A refresh answer's id_token is dropped the same way (the session keeps the one checked at launch).
 */
async function withoutIdToken(response: Response, onIdToken?: (idToken: string) => void): Promise<Response> {
  if (!/json/i.test(response.headers.get('content-type') ?? '')) return response;
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  headers.delete('content-encoding');
  const rebuilt = (content: string) =>
    new Response(content, { status: response.status, statusText: response.statusText, headers });
  if (!body || typeof body !== 'object' || !('id_token' in body)) return rebuilt(text);
  const { id_token: idToken, ...rest } = body as Record<string, unknown>;
  if (typeof idToken === 'string') onIdToken?.(idToken);
  return rebuilt(JSON.stringify(rest));
}

/**
 * An openid-client Configuration for one EHR registration, built from the SMART document (which may lack
 * `issuer`, so OIDC discovery is not used). id_tokens are taken out of token responses and checked by
 * IdTokenVerifier.
 */
export async function smartClientConfiguration(
  smart: SmartConfiguration,
  credentials: Pick<RegistrationCredentials, 'clientId' | 'authMethod' | 'clientSecret' | 'signingAlg' | 'udapSan'>,
  options: SmartClientOptions & {
    onIdToken?: (idToken: string) => void;
    /** The grant this configuration is for (UDAP adds the B2B extension to client_credentials). */
    grant?: 'authorization_code' | 'client_credentials';
  },
): Promise<oidc.Configuration> {
  let auth: oidc.ClientAuth;
  if (credentials.authMethod === 'udap') {
    auth = await udapAuth(options.udap, credentials, smart.token_endpoint, options.grant ?? 'authorization_code');
  } else if (credentials.authMethod === 'client_secret_basic') {
    if (!credentials.clientSecret)
      throw new DtrError('CONFIGURATION', 'client_secret_basic registration without a secret');
    auth = clientSecretBasic(credentials.clientId, credentials.clientSecret);
  } else {
    if (!credentials.signingAlg)
      throw new DtrError('CONFIGURATION', 'private_key_jwt registration without an algorithm');
    const { key, kid } = await options.keys.privateKey(credentials.signingAlg);
    auth = privateKeyJwt(key, kid, smart.token_endpoint);
  }
  const server: oidc.ServerMetadata = {
    // Without OpenID Connect the issuer identifier only labels the configuration.
    issuer: smart.issuer ?? new URL(smart.authorization_endpoint).origin,
    authorization_endpoint: smart.authorization_endpoint,
    token_endpoint: smart.token_endpoint,
    ...(smart.jwks_uri ? { jwks_uri: smart.jwks_uri } : {}),
    ...(smart.revocation_endpoint ? { revocation_endpoint: smart.revocation_endpoint } : {}),
    // Without an issuer there is nothing to check RFC 9207 `iss` against (the launch checks its origin instead).
    ...(smart.issuer && smart.authorization_response_iss_parameter_supported !== undefined
      ? { authorization_response_iss_parameter_supported: smart.authorization_response_iss_parameter_supported }
      : {}),
  };
  const client: Partial<oidc.ClientMetadata> = {
    ...(credentials.signingAlg ? { token_endpoint_auth_signing_alg: credentials.signingAlg } : {}),
  };
  const config = new oidc.Configuration(server, credentials.clientId, client, auth);
  const timeoutMs = options.timeoutMs ?? 10_000;
  // Token answers and the JWKS are read within the discovery limit and checked before openid-client parses them.
  const baseFetch = boundedFetch(options.fetch ?? outboundFetch(options.policy), limitsOf(options.policy).discovery);
  const tokenEndpoint = new URL(smart.token_endpoint).href;
  config[oidc.customFetch] = async (url, init) => {
    const response = await baseFetch(url, {
      ...init,
      signal: init.signal ?? AbortSignal.timeout(timeoutMs),
    } as RequestInit);
    return new URL(url).href === tokenEndpoint ? withoutIdToken(response, options.onIdToken) : response;
  };
  if (
    options.policy.allowInsecureLoopback &&
    [smart.token_endpoint, smart.authorization_endpoint].every((u) => isLoopback(new URL(u)))
  ) {
    oidc.allowInsecureRequests(config);
  }
  return config;
}
