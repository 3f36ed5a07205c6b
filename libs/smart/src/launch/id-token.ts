import { type Clock, DtrError } from '@dtr/kernel';
import {
  createLocalJWKSet,
  decodeJwt,
  errors as joseErrors,
  type JSONWebKeySet,
  type JWTPayload,
  jwtVerify,
} from 'jose';
import { assertOutboundUrl, type OutboundPolicy } from '../outbound-policy.js';
import type { SmartConfiguration } from '../smart-configuration.js';

export interface IdTokenExpectations {
  smart: SmartConfiguration;
  clientId: string;
  /** The nonce sent with the authorization request. */
  nonce: string;
}

const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'];
/** How old an id_token may be when it reaches us (it comes straight from the token endpoint), and clock skew. */
const MAX_AGE_SECONDS = 600;
const SKEW_SECONDS = 60;
const JWKS_TTL_MS = 10 * 60 * 1000;

const refused = (why: string, check: string, cause?: unknown) =>
  new DtrError('FORBIDDEN', `the authorization server's response failed validation: id_token ${why}`, {
    ...(cause ? { cause } : {}),
    details: { check },
  });

/**
 * Checks the id_token of a launch: signature with the issuer's keys, `iss`, `aud` (our client id; `azp` when there
 * are several audiences), `exp`/`iat`, `nonce`. The keys come from `jwks_uri` in the EHR's smart-configuration or,
 * when it has none (a server that does not list `sso-openid-connect`), from the issuer's
 * `.well-known/openid-configuration`. The issuer is the smart-configuration's `issuer`; without one, the id_token's
 * `iss` is accepted only on the token endpoint's own origin (the server that just answered over TLS), and its
 * discovery document must name that same issuer. Every URL passes the outbound policy.
 * @see https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-identity-data
 * @see https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
 * @see https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfigurationValidation
 */
export class IdTokenVerifier {
  private readonly keySets = new Map<string, { set: ReturnType<typeof createLocalJWKSet>; at: number }>();

  constructor(
    private readonly policy: OutboundPolicy,
    private readonly clock: Clock,
    private readonly fetchFn: typeof fetch = fetch,
    private readonly timeoutMs = 10_000,
  ) {}

  async verify(idToken: string, expected: IdTokenExpectations): Promise<JWTPayload> {
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(idToken);
    } catch (cause) {
      throw refused('is not a JWT', 'OAUTH_JWT_INVALID', cause);
    }
    const issuer = this.issuerOf(unverified, expected.smart);
    const jwksUri = expected.smart.jwks_uri ?? (await this.discoveredJwksUri(issuer));
    const options = {
      issuer,
      audience: expected.clientId,
      algorithms: ALGORITHMS,
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat'],
      clockTolerance: SKEW_SECONDS,
      maxTokenAge: MAX_AGE_SECONDS,
      currentDate: this.clock.now(),
    };
    let payload: JWTPayload;
    try {
      payload = (await jwtVerify(idToken, await this.keys(jwksUri, false), options)).payload;
    } catch (first) {
      // The issuer may have rotated its keys since we cached them: fetch once more before refusing.
      if (!(first instanceof joseErrors.JWKSNoMatchingKey)) throw this.translate(first);
      try {
        payload = (await jwtVerify(idToken, await this.keys(jwksUri, true), options)).payload;
      } catch (second) {
        throw this.translate(second);
      }
    }
    if (typeof payload.iat === 'number' && payload.iat > this.clock.now().getTime() / 1000 + SKEW_SECONDS)
      throw refused('was issued in the future (iat)', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED');
    if (Array.isArray(payload.aud) && payload.aud.length > 1 && payload['azp'] !== expected.clientId)
      throw refused('names several audiences without us as azp', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED');
    if (payload['nonce'] !== expected.nonce)
      throw refused('carries another nonce', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED');
    return payload;
  }

  private issuerOf(unverified: JWTPayload, smart: SmartConfiguration): string {
    if (smart.issuer) return smart.issuer;
    const iss = unverified.iss;
    let url: URL;
    try {
      url = new URL(String(iss));
    } catch {
      throw refused('has no valid iss', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED');
    }
    if (url.origin !== new URL(smart.token_endpoint).origin)
      throw refused(`issuer ${url.origin} is not the EHR's authorization server`, 'OAUTH_JWT_CLAIM_COMPARISON_FAILED');
    return String(iss);
  }

  /** `jwks_uri` from the issuer's OpenID discovery document, which must name the same issuer. */
  private async discoveredJwksUri(issuer: string): Promise<string> {
    const url = assertOutboundUrl(
      `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`,
      this.policy,
      'id_token issuer',
    );
    const doc = (await this.getJson(url, 'openid-configuration')) as { issuer?: unknown; jwks_uri?: unknown };
    if (doc.issuer !== issuer)
      throw refused(`issuer's openid-configuration names another issuer`, 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED');
    if (typeof doc.jwks_uri !== 'string')
      throw new DtrError(
        'UPSTREAM_ERROR',
        `the EHR's openid-configuration has no jwks_uri: its id_tokens cannot be checked`,
      );
    return doc.jwks_uri;
  }

  private async keys(jwksUri: string, refresh: boolean): Promise<ReturnType<typeof createLocalJWKSet>> {
    const cached = this.keySets.get(jwksUri);
    const now = this.clock.now().getTime();
    if (cached && !refresh && now - cached.at < JWKS_TTL_MS) return cached.set;
    const url = assertOutboundUrl(jwksUri, this.policy, 'jwks_uri');
    const jwks = (await this.getJson(url, 'JWKS')) as JSONWebKeySet;
    if (!Array.isArray(jwks?.keys)) throw new DtrError('UPSTREAM_ERROR', `the EHR's JWKS has no keys`);
    const set = createLocalJWKSet(jwks);
    this.keySets.set(jwksUri, { set, at: now });
    return set;
  }

  private async getJson(url: URL, what: string): Promise<unknown> {
    let response: Response;
    try {
      response = await this.fetchFn(url, {
        headers: { accept: 'application/json' },
        redirect: 'error',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (cause) {
      throw new DtrError('UPSTREAM_ERROR', `the EHR's ${what} could not be fetched`, { cause });
    }
    if (!response.ok) throw new DtrError('UPSTREAM_ERROR', `the EHR's ${what} answered ${response.status}`);
    try {
      return await response.json();
    } catch (cause) {
      throw new DtrError('UPSTREAM_ERROR', `the EHR's ${what} is not JSON`, { cause });
    }
  }

  private translate(error: unknown): DtrError {
    if (error instanceof DtrError) return error;
    if (error instanceof joseErrors.JWSSignatureVerificationFailed || error instanceof joseErrors.JWKSNoMatchingKey)
      return refused('signature does not verify with the issuer’s published keys', 'OAUTH_JWS_SIGNATURE', error);
    if (error instanceof joseErrors.JWTExpired) return refused('has expired (exp)', 'OAUTH_JWT_TIMESTAMP', error);
    if (error instanceof joseErrors.JWTClaimValidationFailed)
      return refused(`claim ${error.claim} is wrong (${error.reason})`, 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', error);
    if (error instanceof joseErrors.JOSEAlgNotAllowed)
      return refused('is signed with an algorithm we do not accept', 'OAUTH_JWS_ALG', error);
    return refused('could not be verified', 'OAUTH_JWT_INVALID', error);
  }
}
