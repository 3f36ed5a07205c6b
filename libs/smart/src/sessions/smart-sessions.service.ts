import * as oidc from 'openid-client';
import { HttpFhirClient } from '@dtr/fhir';
import { Clock, DtrError } from '@dtr/kernel';
import { translateOAuthError } from '../launch/launch.service.js';
import { outboundFetch } from '../outbound-fetch.js';
import { limitsOf } from '../outbound-policy.js';
import type { ChosenContext } from '../launch-context.js';
import { smartClientConfiguration, type SmartClientOptions } from '../smart-client.js';
import type { SmartDiscovery } from '../smart-configuration.js';
import type { TenantRegistry } from '../tenants/tenant-registry.service.js';
import type { SessionRecord, SessionStore, StoredToken, TokenSet } from './session-store.js';
import { TokenAccess, type UsableToken } from './token-access.js';

/**
 * What the rest of the server asks of a signed-in session: a usable token per purpose, and logout.
 * - `supplement`: the launch token, refreshed with its refresh token;
 * - `disclose`: for user-delegated tenants the token of the second authorization; for system-level tenants a
 *   SMART Backend Services token (client_credentials + private_key_jwt, `system/` scopes), re-issued on expiry.
 * Tokens go only to the FHIR base they were issued for: callers get the base together with the token.
 */
export class SmartSessions {
  readonly access: TokenAccess;

  constructor(
    private readonly store: SessionStore,
    private readonly tenants: TenantRegistry,
    private readonly discovery: SmartDiscovery,
    private readonly clock: Clock,
    private readonly options: SmartClientOptions,
  ) {
    this.access = new TokenAccess(
      store,
      (token) => this.renew(token),
      clock,
      30_000,
      (token) =>
        Boolean(token.refreshToken) ||
        (token.purpose === 'disclose' && token.scope.split(' ').every((s) => s.startsWith('system/'))),
    );
  }

  async token(session: SessionRecord, purpose: 'supplement' | 'disclose'): Promise<UsableToken> {
    if (purpose === 'disclose') {
      const tenant = await this.tenants.get(session.tenantId);
      if (!tenant) throw new DtrError('UNAUTHENTICATED', 'the session tenant no longer exists');
      if (tenant.singleClient) return this.access.get(session.idHash, 'supplement');
      if (tenant.discloseMode === 'system' && !(await this.store.getToken(session.idHash, 'disclose'))) {
        await this.store.storeToken(session.idHash, session.fhirBase, await this.systemToken(session.tenantId));
      }
    }
    return this.access.get(session.idHash, purpose);
  }

  /**
   * A FHIR client for the session's EHR with the token of a purpose. The base URL is the one the token was issued
   * for; the client never sends it anywhere else (paging links on other hosts are not followed).
   */
  fhirClient(
    session: SessionRecord,
    purpose: 'supplement' | 'disclose',
    options: { timeoutMs?: number; retries?: number } = {},
  ): HttpFhirClient {
    const { ehr } = limitsOf(this.options.policy);
    return new HttpFhirClient({
      baseUrl: session.fhirBase,
      fetch: this.options.fetch ?? outboundFetch(this.options.policy),
      maxResponseBytes: ehr.maxBytes,
      maxJsonDepth: ehr.maxDepth,
      accessToken: async () => {
        const token = await this.token(session, purpose);
        if (token.fhirBase !== session.fhirBase)
          throw new DtrError('FORBIDDEN', 'token issued for another FHIR server');
        return token.accessToken;
      },
      ...options,
    });
  }

  /** Records the clinician's choice of order (already checked against the EHR) on the session, sealed. */
  recordChoice(session: SessionRecord, chosen: ChosenContext): Promise<SessionRecord> {
    return this.store.recordChoice(session, chosen);
  }

  /** Revokes at the EHR when it advertises a revocation endpoint, then ends the session here either way. */
  async logout(session: SessionRecord): Promise<{ revokedAtEhr: boolean }> {
    let revokedAtEhr = false;
    try {
      const smart = await this.discovery.get(session.fhirBase);
      if (smart.revocation_endpoint) {
        for (const purpose of ['supplement', 'disclose'] as const) {
          const token = await this.store.getToken(session.idHash, purpose);
          if (!token) continue;
          const credentials = await this.tenants.credentialsFor(session.tenantId, purpose);
          const config = await smartClientConfiguration(smart, credentials, this.options);
          await oidc.tokenRevocation(config, token.refreshToken ?? token.accessToken);
          revokedAtEhr = true;
        }
      }
    } catch {
      // Logging out must not fail because the EHR is unreachable; the session ends here regardless.
      revokedAtEhr = false;
    }
    await this.store.revoke(session.idHash);
    return { revokedAtEhr };
  }

  /**
   * A new token for an expiring one. The registration is the session's tenant's (stored with the session at launch),
   * never one looked up from the token's FHIR base: a base re-registered under another tenant must not lend that
   * tenant's client to this session.
   */
  private async renew(token: StoredToken): Promise<TokenSet> {
    const tenantId = token.tenantId;
    if (!token.refreshToken) return this.systemToken(tenantId);
    const smart = { ...(await this.discovery.get(token.fhirBase)), token_endpoint: token.tokenEndpoint };
    const credentials = await this.tenants.credentialsFor(tenantId, token.purpose);
    const config = await smartClientConfiguration(smart, credentials, this.options);
    try {
      const next = await oidc.refreshTokenGrant(config, token.refreshToken);
      return {
        accessToken: next.access_token,
        ...(next.refresh_token ? { refreshToken: next.refresh_token } : {}),
        ...(next.id_token ? { idToken: next.id_token } : {}),
        scope: next.scope ?? token.scope,
        expiresAt: new Date(this.clock.now().getTime() + (next.expiresIn() ?? 300) * 1000),
      };
    } catch (cause) {
      throw translateOAuthError(cause);
    }
  }

  private async systemToken(
    tenantId: string,
  ): Promise<TokenSet & { purpose: 'disclose'; tokenEndpoint: string; clientId: string }> {
    const tenant = await this.tenants.get(tenantId);
    if (!tenant) throw new DtrError('UNAUTHENTICATED', 'the session tenant no longer exists');
    const smart = await this.discovery.get(tenant.fhirBase);
    const credentials = await this.tenants.credentialsFor(tenantId, 'disclose');
    const config = await smartClientConfiguration(smart, credentials, { ...this.options, grant: 'client_credentials' });
    try {
      const granted = await oidc.clientCredentialsGrant(config, { scope: credentials.scopes.join(' ') });
      assertNarrowSystemScopes(granted.scope, credentials.scopes);
      return {
        purpose: 'disclose',
        tokenEndpoint: smart.token_endpoint,
        clientId: credentials.clientId,
        accessToken: granted.access_token,
        scope: granted.scope ?? credentials.scopes.join(' '),
        expiresAt: new Date(this.clock.now().getTime() + (granted.expiresIn() ?? 300) * 1000),
      };
    } catch (cause) {
      throw translateOAuthError(cause);
    }
  }
}

/**
 * System-level disclosure holds only the narrow `system/` scopes registered for it: a token response granting any
 * other scope (a broader or non-system one) is refused before the token is stored or used. No `scope` in the
 * response means exactly what was asked was granted (RFC 6749 §5.1).
 * @see https://build.fhir.org/ig/HL7/smart-app-launch/backend-services.html#issue-access-token
 */
function assertNarrowSystemScopes(granted: string | undefined, requested: string[]): void {
  if (granted === undefined) return;
  const extra = granted
    .split(' ')
    .filter(Boolean)
    .filter((scope) => !scope.startsWith('system/') || !requested.includes(scope));
  if (extra.length > 0)
    throw new DtrError(
      'FORBIDDEN',
      `the EHR granted system-level disclosure more than its registered system/ scopes (${extra.join(' ')}); the token was not used`,
    );
}
