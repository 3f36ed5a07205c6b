import { Clock, DtrError } from '@dtr/kernel';
import type { RegistrationPurpose } from '../tenants/tenant.types.js';
import type { SessionStore, StoredToken, TokenSet } from './session-store.js';

export interface UsableToken {
  accessToken: string;
  fhirBase: string;
  scope: string;
  clientId: string;
}

/** Exchanges a refresh token at the token endpoint the token came from (see SmartSessionService). */
export type Refresher = (token: StoredToken) => Promise<TokenSet>;

/**
 * Hands out access tokens for a session, refreshing them shortly before they expire. Refresh is single-flight:
 * within the process through a map of pending refreshes, across instances through the token row's lock (the
 * second comer re-reads the row and finds it fresh). The newest refresh token is stored.
 */
export class TokenAccess {
  private readonly inflight = new Map<string, Promise<UsableToken>>();

  constructor(
    private readonly store: SessionStore,
    private readonly refresher: Refresher,
    private readonly clock: Clock,
    private readonly skewMs = 30_000,
    /** Whether an expired token can be renewed: by default only with a refresh token (system tokens are re-issued). */
    private readonly renewable: (token: StoredToken) => boolean = (token) => Boolean(token.refreshToken),
  ) {}

  async get(sessionIdHash: string, purpose: RegistrationPurpose): Promise<UsableToken> {
    const token = await this.store.getToken(sessionIdHash, purpose);
    if (!token) throw new DtrError('UNAUTHENTICATED', `no ${purpose} authorization in this session`);
    if (this.fresh(token)) return usable(token);
    const key = `${sessionIdHash}:${purpose}`;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.refresh(sessionIdHash, purpose).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  private fresh(token: { expiresAt: Date }): boolean {
    return token.expiresAt.getTime() - this.clock.now().getTime() > this.skewMs;
  }

  private refresh(sessionIdHash: string, purpose: RegistrationPurpose): Promise<UsableToken> {
    return this.store.withLockedToken(sessionIdHash, purpose, async (token, save) => {
      if (this.fresh(token)) return usable(token);
      if (!this.renewable(token)) {
        throw new DtrError('UNAUTHENTICATED', 'the EHR authorization has expired; launch the app again');
      }
      const next = await this.refresher(token);
      await save(next);
      return { accessToken: next.accessToken, fhirBase: token.fhirBase, scope: next.scope, clientId: token.clientId };
    });
  }
}

function usable(token: StoredToken): UsableToken {
  return { accessToken: token.accessToken, fhirBase: token.fhirBase, scope: token.scope, clientId: token.clientId };
}
