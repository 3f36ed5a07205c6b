import { Clock, DtrError } from '@dtr/kernel';
import {
  discoverUdapServer,
  type DiscoveredUdapServer,
  registerUdapClient,
  type UdapGrantType,
  type UdapRegistration,
} from '@dtr/udap';
import { outboundFetch } from '../outbound-fetch.js';
import { assertOutboundUrl, type OutboundPolicy } from '../outbound-policy.js';
import { UdapIdentityStore } from './udap-identity-store.js';

export interface UdapRegistrationRequest {
  /** The FHIR base whose `.well-known/udap` is asked. */
  baseUrl: string;
  /** The community whose anchors the signed metadata must chain to; every community's when absent. */
  community?: string;
  /** Our identity (a SAN URI of one of our certificates): `iss` and `sub` of the software statement. */
  sanUri: string;
  /** One grant type per registration; `cancel` asks the server to cancel the client (empty grant_types). */
  grantType: UdapGrantType | 'cancel';
  clientName: string;
  contacts: string[];
  redirectUri?: string;
  logoUri?: string;
  scope: string;
  /**
   * For a user-facing (authorization_code) client: also register the `udap` scope when the server offers Tiered OAuth
   * (`udap_to`), so a launch may later ask for it with an `idp`.
   */
  tieredOAuth?: boolean;
}

export interface UdapRegistrationOutcome {
  server: DiscoveredUdapServer;
  registration: UdapRegistration;
}

/** How long a server's checked metadata is reused by launches (registration always asks again). */
const METADATA_TTL_MS = 5 * 60 * 1000;

/**
 * UDAP discovery and dynamic client registration for our identities. A server's endpoints are taken only from its
 * signed metadata once that chains to one of the community's anchors; every URL goes through the outbound policy.
 * @see https://hl7.org/fhir/us/udap-security/discovery.html
 * @see https://hl7.org/fhir/us/udap-security/registration.html
 */
export class UdapRegistrar {
  private readonly fetchFn: typeof fetch;
  private readonly cache = new Map<string, { server: DiscoveredUdapServer; until: number }>();

  constructor(
    readonly identities: UdapIdentityStore,
    private readonly policy: OutboundPolicy,
    private readonly clock: Clock,
    fetchFn?: typeof fetch,
  ) {
    this.fetchFn = fetchFn ?? outboundFetch(policy);
  }

  /**
   * The server's checked metadata. Refused (UPSTREAM_ERROR, the UDAP reason in `details.udap`) when it has none, its
   * signature or certificate chain does not check out against the community's anchors, or its endpoints are not
   * allowed by our outbound policy.
   */
  async discover(baseUrl: string, community?: string): Promise<DiscoveredUdapServer> {
    assertOutboundUrl(baseUrl, this.policy, 'UDAP server base URL');
    const anchorsPem = await this.identities.anchorsPem(community);
    let server: DiscoveredUdapServer;
    try {
      server = await discoverUdapServer(baseUrl, {
        fetch: this.fetchFn,
        anchorsPem,
        ...(community ? { community } : {}),
        now: this.clock.now(),
      });
    } catch (error) {
      throw refused(baseUrl, error);
    }
    for (const [field, url] of [
      ['token_endpoint', server.tokenEndpoint],
      ['registration_endpoint', server.registrationEndpoint],
      ...(server.authorizationEndpoint ? [['authorization_endpoint', server.authorizationEndpoint] as const] : []),
    ] as const)
      assertOutboundUrl(url, this.policy, `UDAP ${field} of ${baseUrl}`);
    return server;
  }

  /** As `discover`, remembered for a few minutes per base URL and community (for launches). */
  async discoverCached(baseUrl: string, community?: string): Promise<DiscoveredUdapServer> {
    const key = `${baseUrl}|${community ?? ''}`;
    const hit = this.cache.get(key);
    const now = this.clock.now().getTime();
    if (hit && hit.until > now) return hit.server;
    const server = await this.discover(baseUrl, community);
    this.cache.set(key, { server, until: now + METADATA_TTL_MS });
    return server;
  }

  /** Discovers the server, then signs our software statement with the SAN URI's certificate and registers it. */
  async register(request: UdapRegistrationRequest): Promise<UdapRegistrationOutcome> {
    const server = await this.discover(request.baseUrl, request.community);
    if (!server.profiles.includes('udap_dcr'))
      throw new DtrError(
        'UPSTREAM_ERROR',
        `${request.baseUrl} does not offer UDAP dynamic client registration (udap_dcr is not in udap_profiles_supported)`,
      );
    const identity = await this.identities.identityFor(request.sanUri);
    const registration = await registerUdapClient(
      server,
      {
        identity,
        registrationEndpoint: server.registrationEndpoint,
        clientName: request.clientName,
        contacts: request.contacts,
        grantType: request.grantType,
        ...(request.redirectUri ? { redirectUris: [request.redirectUri] } : {}),
        ...(request.logoUri ? { logoUri: request.logoUri } : {}),
        scope: scopeWithTieredOAuth(request, server),
        now: this.clock.now(),
      },
      { fetch: this.fetchFn },
    );
    this.cache.delete(`${request.baseUrl}|${request.community ?? ''}`);
    return { server, registration };
  }
}

/** The statement's scope: the requested one, plus `udap` for Tiered OAuth where the request and the server allow it. */
function scopeWithTieredOAuth(request: UdapRegistrationRequest, server: DiscoveredUdapServer): string {
  const scopes = request.scope.split(' ').filter(Boolean);
  if (request.tieredOAuth && request.grantType === 'authorization_code' && server.profiles.includes('udap_to'))
    for (const scope of ['openid', 'udap']) if (!scopes.includes(scope)) scopes.push(scope);
  return scopes.join(' ');
}

/** A failed discovery, said so, with the UDAP reason kept for the operator's table of refusals. */
function refused(baseUrl: string, error: unknown): DtrError {
  if (error instanceof DtrError)
    return new DtrError(error.code, `the UDAP metadata of ${baseUrl} was refused: ${error.message}`, {
      cause: error,
      ...(error.details ? { details: error.details } : {}),
    });
  return new DtrError('UPSTREAM_ERROR', `the UDAP metadata of ${baseUrl} could not be read`, { cause: error });
}
