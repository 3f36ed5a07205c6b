import { readUpstreamJson } from '@dtr/fhir';
import { Clock, DtrError } from '@dtr/kernel';
import { outboundFetch } from './outbound-fetch.js';
import { assertOutboundUrl, limitsOf, normaliseBaseUrl, type OutboundPolicy } from './outbound-policy.js';

/**
 * The subset of `.well-known/smart-configuration` we rely on.
 * @see https://hl7.org/fhir/smart-app-launch/conformance.html#metadata
 */
export interface SmartConfiguration {
  /** Present when the server supports OpenID Connect (`sso-openid-connect`). */
  issuer?: string;
  jwks_uri?: string;
  authorization_endpoint: string;
  token_endpoint: string;
  revocation_endpoint?: string;
  introspection_endpoint?: string;
  capabilities: string[];
  scopes_supported?: string[];
  grant_types_supported?: string[];
  code_challenge_methods_supported?: string[];
  token_endpoint_auth_methods_supported?: string[];
  token_endpoint_auth_signing_alg_values_supported?: string[];
  authorization_response_iss_parameter_supported?: boolean;
}

export function supportsOpenId(config: SmartConfiguration): boolean {
  return Boolean(config.issuer && config.jwks_uri) && config.capabilities.includes('sso-openid-connect');
}

/** Validates a fetched document: required endpoints present and allowed by the outbound policy; PKCE S256. */
export function parseSmartConfiguration(body: unknown, policy: OutboundPolicy): SmartConfiguration {
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new DtrError('UPSTREAM_ERROR', 'smart-configuration is not a JSON object');
  }
  const doc = body as Record<string, unknown>;
  const url = (key: string, required: boolean): string | undefined => {
    const value = doc[key];
    if (value === undefined || value === null) {
      if (required) throw new DtrError('UPSTREAM_ERROR', `smart-configuration lacks ${key}`);
      return undefined;
    }
    if (typeof value !== 'string') throw new DtrError('UPSTREAM_ERROR', `smart-configuration ${key} is not a string`);
    return assertOutboundUrl(value, policy, `smart-configuration ${key}`).toString();
  };
  const strings = (key: string): string[] | undefined => {
    const value = doc[key];
    return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : undefined;
  };
  const methods = strings('code_challenge_methods_supported');
  // SMART 2: servers SHALL support S256 and SHALL NOT support plain; refuse a server that says it cannot.
  if (methods && !methods.includes('S256')) {
    throw new DtrError('UPSTREAM_ERROR', 'the authorization server does not support PKCE S256');
  }
  const config: SmartConfiguration = {
    authorization_endpoint: url('authorization_endpoint', true)!,
    token_endpoint: url('token_endpoint', true)!,
    capabilities: strings('capabilities') ?? [],
  };
  const optional = {
    issuer: typeof doc['issuer'] === 'string' ? (doc['issuer'] as string) : undefined,
    jwks_uri: url('jwks_uri', false),
    revocation_endpoint: url('revocation_endpoint', false),
    introspection_endpoint: url('introspection_endpoint', false),
    scopes_supported: strings('scopes_supported'),
    grant_types_supported: strings('grant_types_supported'),
    code_challenge_methods_supported: methods,
    token_endpoint_auth_methods_supported: strings('token_endpoint_auth_methods_supported'),
    token_endpoint_auth_signing_alg_values_supported: strings('token_endpoint_auth_signing_alg_values_supported'),
    authorization_response_iss_parameter_supported:
      typeof doc['authorization_response_iss_parameter_supported'] === 'boolean'
        ? (doc['authorization_response_iss_parameter_supported'] as boolean)
        : undefined,
  };
  for (const [key, value] of Object.entries(optional)) {
    if (value !== undefined) (config as unknown as Record<string, unknown>)[key] = value;
  }
  return config;
}

interface CacheEntry {
  config: SmartConfiguration;
  fetchedAt: number;
}

/**
 * Discovery per FHIR base (`{iss}/.well-known/smart-configuration`), cached per issuer for `ttlMs`.
 * Callers must only pass a FHIR base that belongs to a registered tenant (the launch checks that first), so an
 * unknown `iss` never causes a request. A failed use of a cached document calls `invalidate` to refresh it.
 * @see https://hl7.org/fhir/smart-app-launch/conformance.html#using-well-known
 */
export class SmartDiscovery {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inflight = new Map<string, Promise<SmartConfiguration>>();
  private readonly fetchFn: typeof fetch;

  constructor(
    private readonly policy: OutboundPolicy,
    private readonly clock: Clock,
    fetchFn?: typeof fetch,
    private readonly ttlMs = 60 * 60 * 1000,
    private readonly timeoutMs = 10_000,
  ) {
    this.fetchFn = fetchFn ?? outboundFetch(policy);
  }

  async get(fhirBase: string): Promise<SmartConfiguration> {
    const key = normaliseBaseUrl(fhirBase);
    const cached = this.cache.get(key);
    if (cached && this.clock.now().getTime() - cached.fetchedAt < this.ttlMs) return cached.config;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.fetchDocument(key).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  invalidate(fhirBase: string): void {
    this.cache.delete(normaliseBaseUrl(fhirBase));
  }

  private async fetchDocument(base: string): Promise<SmartConfiguration> {
    const url = assertOutboundUrl(`${base}/.well-known/smart-configuration`, this.policy, 'FHIR base');
    let response: Response;
    try {
      response = await this.fetchFn(url, {
        headers: { accept: 'application/json' },
        redirect: 'error',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (cause) {
      const timedOut = cause instanceof Error && cause.name === 'TimeoutError';
      throw new DtrError(
        timedOut ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_ERROR',
        `the EHR's smart-configuration could not be fetched`,
        {
          cause,
        },
      );
    }
    if (!response.ok) {
      throw new DtrError('UPSTREAM_ERROR', `the EHR's smart-configuration answered ${response.status}`);
    }
    // A few KiB in practice: read within the discovery limit and checked as inbound JSON is.
    const body = await readUpstreamJson(response, limitsOf(this.policy).discovery, url.toString()).catch(
      (cause: unknown) => {
        throw new DtrError(
          'UPSTREAM_ERROR',
          `the EHR's smart-configuration was refused: ${cause instanceof Error ? cause.message : 'unreadable'}`,
          { cause },
        );
      },
    );
    const config = parseSmartConfiguration(body, this.policy);
    this.cache.set(base, { config, fetchedAt: this.clock.now().getTime() });
    return config;
  }
}
