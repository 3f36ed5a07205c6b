import { Clock, DtrError } from '@dtr/kernel';
import type { DataSource } from 'typeorm';
import { opaqueId, sha256 } from '../hashing.js';
import type { ChosenContext, LaunchContext } from '../launch-context.js';
import { SecretBox } from '../secret-box.js';
import type { RegistrationPurpose } from '../tenants/tenant.types.js';
import { SessionRepository, type SessionRow, type TokenRow } from './session.repository.js';

export interface SessionRecord {
  idHash: string;
  tenantId: string;
  fhirBase: string;
  patient: string | null;
  encounter: string | null;
  fhirUser: string | null;
  context: LaunchContext & { singleClient?: boolean };
  createdAt: Date;
  expiresAt: Date;
}

export interface TokenSet {
  accessToken: string;
  refreshToken?: string;
  idToken?: string;
  scope: string;
  expiresAt: Date;
}

export interface TokenMeta {
  purpose: RegistrationPurpose;
  tokenEndpoint: string;
  clientId: string;
}

export interface StoredToken extends TokenSet, TokenMeta {
  fhirBase: string;
  /** The tenant of the session the token belongs to: a refresh authenticates with this tenant's registration. */
  tenantId: string;
  refreshedCount: number;
}

const aad = (idHash: string, purpose: RegistrationPurpose, field: string) =>
  `session_token:${idHash}:${purpose}:${field}`;
const chosenAad = (idHash: string) => `app_session:${idHash}:chosen`;

/**
 * Browser sessions and the token vault. The browser holds only the opaque session id (cookie); here it is
 * stored as a hash. Tokens are sealed with AAD naming their session, purpose and field, so a ciphertext cannot
 * be replayed into another row.
 */
export class SessionStore {
  private readonly repository: SessionRepository;

  private readonly idleMs: number;

  constructor(
    dataSource: DataSource,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
    /** A session not used for this long has ended (default 30 minutes). */
    options: { idleMs?: number } = {},
  ) {
    this.repository = new SessionRepository(dataSource);
    this.idleMs = options.idleMs ?? 30 * 60_000;
  }

  /** Creates a session with its first token set; returns the new opaque id (for the cookie) and the record. */
  async create(
    input: Omit<SessionRecord, 'idHash' | 'createdAt' | 'expiresAt'> & { ttlMs: number },
    token: TokenSet & TokenMeta,
  ): Promise<{ sessionId: string; record: SessionRecord }> {
    const sessionId = opaqueId();
    const idHash = sha256(sessionId);
    const now = this.clock.now();
    const expiresAt = new Date(now.getTime() + input.ttlMs);
    await this.repository.transaction(async (tx) => {
      await tx.insertSession({
        id_hash: idHash,
        tenant_id: input.tenantId,
        fhir_base: input.fhirBase,
        patient: input.patient,
        encounter: input.encounter,
        fhir_user: input.fhirUser,
        context: input.context,
        expires_at: expiresAt,
        last_seen_at: now,
      });
      await tx.writeToken(this.sealToken(idHash, input.fhirBase, token), false);
    });
    const record = (await this.find(sessionId))!;
    return { sessionId, record };
  }

  /** The live session for a cookie value, or undefined (unknown, expired or revoked). */
  find(sessionId: string): Promise<SessionRecord | undefined> {
    return this.findByHash(sha256(sessionId));
  }

  /** The live session with this id hash (the server side of a cookie), marking it seen. */
  async findByHash(idHash: string): Promise<SessionRecord | undefined> {
    const now = this.clock.now();
    const idleSince = new Date(now.getTime() - this.idleMs);
    const row = await this.repository.touchLive(idHash, now, idleSince);
    if (!row) {
      // An ended session's tokens go as soon as anyone presents it (the purge job takes the others).
      await this.repository.transaction((tx) => tx.endIfEnded(idHash, now, idleSince));
      return undefined;
    }
    return {
      idHash: row.id_hash,
      tenantId: row.tenant_id,
      fhirBase: row.fhir_base,
      patient: row.patient,
      encounter: row.encounter,
      fhirUser: row.fhir_user,
      context: this.openContext(row),
      createdAt: row.created_at,
      expiresAt: row.expires_at,
    };
  }

  /**
   * Records the clinician's choice (order picker) on the session's context, sealed like its tokens (AAD naming the
   * session), and returns the session as it is now.
   */
  async recordChoice(session: SessionRecord, chosen: ChosenContext): Promise<SessionRecord> {
    const { chosen: _previous, ...context } = session.context;
    const stored = { ...context, chosenSealed: this.secrets.seal(JSON.stringify(chosen), chosenAad(session.idHash)) };
    await this.repository.updateContext(session.idHash, stored);
    return { ...session, context: { ...context, chosen } };
  }

  /** The stored context with the sealed choice opened (and the ciphertext left out). */
  private openContext(row: SessionRow): SessionRecord['context'] {
    const { chosenSealed, ...context } = row.context;
    if (!chosenSealed) return context;
    const chosen = JSON.parse(this.secrets.open(chosenSealed, chosenAad(row.id_hash))) as ChosenContext;
    return { ...context, chosen };
  }

  /** Ends a session: revoked, and its tokens deleted in the same transaction. */
  async revoke(idHash: string): Promise<void> {
    await this.repository.transaction((tx) => tx.revoke(idHash));
  }

  async storeToken(idHash: string, fhirBase: string, token: TokenSet & TokenMeta): Promise<void> {
    await this.repository.writeToken(this.sealToken(idHash, fhirBase, token), false);
  }

  async getToken(idHash: string, purpose: RegistrationPurpose): Promise<StoredToken | undefined> {
    const row = await this.repository.token(idHash, purpose);
    return row ? this.openToken(row) : undefined;
  }

  /** Runs `fn` in a transaction holding the token row's lock, so a refresh is single-flight across instances. */
  async withLockedToken<T>(
    idHash: string,
    purpose: RegistrationPurpose,
    fn: (token: StoredToken, save: (next: TokenSet) => Promise<void>) => Promise<T>,
  ): Promise<T> {
    return this.repository.transaction(async (tx) => {
      const row = await tx.token(idHash, purpose, true);
      if (!row) throw new DtrError('UNAUTHENTICATED', 'the session has no token for this purpose');
      const token = this.openToken(row);
      return fn(token, async (next) => {
        const refreshToken = next.refreshToken ?? token.refreshToken;
        const sealed = this.sealToken(idHash, token.fhirBase, {
          ...next,
          // Keep the previous refresh token when the server does not rotate it.
          ...(refreshToken ? { refreshToken } : {}),
          purpose,
          tokenEndpoint: token.tokenEndpoint,
          clientId: token.clientId,
        });
        await tx.writeToken(sealed, true);
      });
    });
  }

  private openToken(row: TokenRow): StoredToken {
    const { session_id_hash: idHash, purpose } = row;
    return {
      purpose,
      tenantId: row.tenant_id,
      fhirBase: row.fhir_base,
      tokenEndpoint: row.token_endpoint,
      clientId: row.client_id,
      scope: row.scope,
      accessToken: this.secrets.open(row.access_token_enc, aad(idHash, purpose, 'access')),
      ...(row.refresh_token_enc
        ? { refreshToken: this.secrets.open(row.refresh_token_enc, aad(idHash, purpose, 'refresh')) }
        : {}),
      ...(row.id_token_enc ? { idToken: this.secrets.open(row.id_token_enc, aad(idHash, purpose, 'id')) } : {}),
      expiresAt: row.expires_at,
      refreshedCount: row.refreshed_count,
    };
  }

  private sealToken(idHash: string, fhirBase: string, token: TokenSet & TokenMeta) {
    const p = token.purpose;
    return {
      session_id_hash: idHash,
      purpose: p,
      fhir_base: fhirBase,
      token_endpoint: token.tokenEndpoint,
      client_id: token.clientId,
      scope: token.scope,
      access_token_enc: this.secrets.seal(token.accessToken, aad(idHash, p, 'access')),
      refresh_token_enc: token.refreshToken ? this.secrets.seal(token.refreshToken, aad(idHash, p, 'refresh')) : null,
      id_token_enc: token.idToken ? this.secrets.seal(token.idToken, aad(idHash, p, 'id')) : null,
      expires_at: token.expiresAt,
    };
  }
}
