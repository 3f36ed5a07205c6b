import * as oidc from 'openid-client';
import { boundedFetch } from '@dtr/fhir';
import { Clock, DtrError } from '@dtr/kernel';
import { outboundFetch } from './outbound-fetch.js';
import { translateOAuthError } from './launch/launch.service.js';
import { assertOutboundUrl, isLoopback, limitsOf, type OutboundPolicy } from './outbound-policy.js';
import { type ClientKeyProvider, privateKeyJwt, udapAuth, type UdapClientOptions } from './smart-client.js';
import type { SigningAlg } from './tenants/tenant.types.js';

export interface BackendServicesRegistration {
  tokenEndpoint: string;
  clientId: string;
  /** `private_key_jwt` (the default) with our JWKS keys, or `udap` with the certificate of `udapSan`. */
  authMethod?: 'private_key_jwt' | 'udap';
  signingAlg: SigningAlg;
  /** With `udap`: the SAN URI we registered as. */
  udapSan?: string;
  scopes: string[];
  /** The connection to use for this registration (a payer's mutual TLS), instead of the default fetch. */
  fetch?: typeof fetch;
}

interface Cached {
  accessToken: string;
  expiresAt: number;
}

/**
 * SMART Backend Services (client_credentials + private_key_jwt, or UDAP B2B client credentials) for system-to-system calls: payers, and system-level
 * disclosure to an EHR. Tokens are cached per registration until shortly before they expire; concurrent callers
 * share one request. A token is handed out only with the registration it belongs to, so it goes nowhere else.
 * @see https://hl7.org/fhir/smart-app-launch/backend-services.html
 */
export class BackendServicesClient {
  private readonly cache = new Map<string, Cached>();
  private readonly inflight = new Map<string, Promise<Cached>>();
  private readonly fetchFn: typeof fetch;

  constructor(
    private readonly keys: ClientKeyProvider,
    private readonly policy: OutboundPolicy,
    private readonly clock: Clock,
    fetchFn?: typeof fetch,
    private readonly refreshBeforeMs = 60_000,
    /** UDAP client authentication (certificates and the `hl7-b2b` facts), for `udap` registrations. */
    private readonly udap?: UdapClientOptions,
  ) {
    this.fetchFn = fetchFn ?? outboundFetch(policy);
  }

  async token(registration: BackendServicesRegistration): Promise<string> {
    const key = `${registration.tokenEndpoint}|${registration.clientId}|${[...registration.scopes].sort().join(' ')}`;
    const cached = this.cache.get(key);
    if (cached && cached.expiresAt - this.clock.now().getTime() > this.refreshBeforeMs) return cached.accessToken;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.request(registration)
        .then((fresh) => {
          this.cache.set(key, fresh);
          return fresh;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return (await pending).accessToken;
  }

  /** Forget a cached token (after the resource server refused it). */
  invalidate(registration: BackendServicesRegistration): void {
    for (const key of this.cache.keys())
      if (key.startsWith(`${registration.tokenEndpoint}|${registration.clientId}|`)) this.cache.delete(key);
  }

  private async request(registration: BackendServicesRegistration): Promise<Cached> {
    const endpoint = assertOutboundUrl(registration.tokenEndpoint, this.policy, 'token endpoint');
    let auth: oidc.ClientAuth;
    if (registration.authMethod === 'udap') {
      auth = await udapAuth(this.udap, registration, endpoint.toString(), 'client_credentials');
    } else {
      const { key, kid } = await this.keys.privateKey(registration.signingAlg);
      auth = privateKeyJwt(key, kid, endpoint.toString());
    }
    const config = new oidc.Configuration(
      { issuer: endpoint.origin, token_endpoint: endpoint.toString() },
      registration.clientId,
      registration.authMethod === 'udap' ? {} : { token_endpoint_auth_signing_alg: registration.signingAlg },
      auth,
    );
    const fetchFn = boundedFetch(registration.fetch ?? this.fetchFn, limitsOf(this.policy).discovery);
    config[oidc.customFetch] = (url, init) =>
      fetchFn(url, { ...init, signal: AbortSignal.timeout(10_000) } as RequestInit);
    if (this.policy.allowInsecureLoopback && isLoopback(endpoint)) oidc.allowInsecureRequests(config);
    try {
      const granted = await oidc.clientCredentialsGrant(config, { scope: registration.scopes.join(' ') });
      if (granted.token_type.toLowerCase() !== 'bearer')
        throw new DtrError('UPSTREAM_ERROR', `unsupported token_type ${granted.token_type}`);
      return {
        accessToken: granted.access_token,
        expiresAt: this.clock.now().getTime() + (granted.expiresIn() ?? 300) * 1000,
      };
    } catch (cause) {
      throw translateOAuthError(cause);
    }
  }
}
