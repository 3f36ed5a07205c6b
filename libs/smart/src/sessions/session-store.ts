import { Clock, DtrError } from '@dtr/kernel';
import { rowsOf } from '@dtr/persistence';
import type { DataSource, EntityManager } from 'typeorm';
import { opaqueId, sha256 } from '../hashing.js';
import type { LaunchContext } from '../launch-context.js';
import { SecretBox } from '../secret-box.js';
import type { RegistrationPurpose } from '../tenants/ehr-registration.entity.js';

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
  refreshedCount: number;
}

interface SessionRow {
  id_hash: string;
  tenant_id: string;
  fhir_base: string;
  patient: string | null;
  encounter: string | null;
  fhir_user: string | null;
  context: SessionRecord['context'];
  created_at: Date;
  expires_at: Date;
}

interface TokenRow {
  purpose: RegistrationPurpose;
  fhir_base: string;
  token_endpoint: string;
  client_id: string;
  scope: string;
  access_token_enc: string;
  refresh_token_enc: string | null;
  id_token_enc: string | null;
  expires_at: Date;
  refreshed_count: number;
}

const aad = (idHash: string, purpose: RegistrationPurpose, field: string) =>
  `session_token:${idHash}:${purpose}:${field}`;

/**
 * Browser sessions and the token vault. The browser holds only the opaque session id (cookie); here it is
 * stored as a hash. Tokens are sealed with AAD naming their session, purpose and field, so a ciphertext cannot
 * be replayed into another row.
 */
export class SessionStore {
  constructor(
    private readonly dataSource: DataSource,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
  ) {}

  /** Creates a session with its first token set; returns the new opaque id (for the cookie) and the record. */
  async create(
    input: Omit<SessionRecord, 'idHash' | 'createdAt' | 'expiresAt'> & { ttlMs: number },
    token: TokenSet & TokenMeta,
  ): Promise<{ sessionId: string; record: SessionRecord }> {
    const sessionId = opaqueId();
    const idHash = sha256(sessionId);
    const expiresAt = new Date(this.clock.now().getTime() + input.ttlMs);
    await this.dataSource.transaction(async (manager) => {
      await manager.query(
        `INSERT INTO app_session (id_hash, tenant_id, fhir_base, patient, encounter, fhir_user, context, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [
          idHash,
          input.tenantId,
          input.fhirBase,
          input.patient,
          input.encounter,
          input.fhirUser,
          JSON.stringify(input.context),
          expiresAt,
        ],
      );
      await this.writeToken(manager, idHash, input.fhirBase, token, false);
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
    const result: unknown = await this.dataSource.query(
      `UPDATE app_session SET last_seen_at = now()
       WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > $2
       RETURNING id_hash, tenant_id, fhir_base, patient, encounter, fhir_user, context, created_at, expires_at`,
      [idHash, this.clock.now()],
    );
    const row = rowsOf<SessionRow>(result)[0];
    if (!row) return undefined;
    return {
      idHash: row.id_hash,
      tenantId: row.tenant_id,
      fhirBase: row.fhir_base,
      patient: row.patient,
      encounter: row.encounter,
      fhirUser: row.fhir_user,
      context: row.context,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
    };
  }

  async revoke(idHash: string): Promise<void> {
    await this.dataSource.query(`UPDATE app_session SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL`, [
      idHash,
    ]);
  }

  async storeToken(idHash: string, fhirBase: string, token: TokenSet & TokenMeta): Promise<void> {
    await this.dataSource.transaction((manager) => this.writeToken(manager, idHash, fhirBase, token, false));
  }

  async getToken(
    idHash: string,
    purpose: RegistrationPurpose,
    manager?: EntityManager,
    lock = false,
  ): Promise<StoredToken | undefined> {
    const runner = manager ?? this.dataSource.manager;
    const rows = (await runner.query(
      `SELECT purpose, fhir_base, token_endpoint, client_id, scope, access_token_enc, refresh_token_enc, id_token_enc,
              expires_at, refreshed_count
       FROM session_token WHERE session_id_hash = $1 AND purpose = $2${lock ? ' FOR UPDATE' : ''}`,
      [idHash, purpose],
    )) as TokenRow[];
    const row = rows[0];
    if (!row) return undefined;
    return {
      purpose: row.purpose,
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

  /** Runs `fn` in a transaction holding the token row's lock, so a refresh is single-flight across instances. */
  async withLockedToken<T>(
    idHash: string,
    purpose: RegistrationPurpose,
    fn: (token: StoredToken, save: (next: TokenSet) => Promise<void>) => Promise<T>,
  ): Promise<T> {
    return this.dataSource.transaction(async (manager) => {
      const token = await this.getToken(idHash, purpose, manager, true);
      if (!token) throw new DtrError('UNAUTHENTICATED', 'the session has no token for this purpose');
      return fn(token, async (next) => {
        const refreshToken = next.refreshToken ?? token.refreshToken;
        await this.writeToken(
          manager,
          idHash,
          token.fhirBase,
          {
            ...next,
            // Keep the previous refresh token when the server does not rotate it.
            ...(refreshToken ? { refreshToken } : {}),
            purpose,
            tokenEndpoint: token.tokenEndpoint,
            clientId: token.clientId,
          },
          true,
        );
      });
    });
  }

  private async writeToken(
    manager: EntityManager,
    idHash: string,
    fhirBase: string,
    token: TokenSet & TokenMeta,
    refreshed: boolean,
  ): Promise<void> {
    const p = token.purpose;
    await manager.query(
      `INSERT INTO session_token (session_id_hash, purpose, fhir_base, token_endpoint, client_id, scope,
                                  access_token_enc, refresh_token_enc, id_token_enc, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
       ON CONFLICT (session_id_hash, purpose) DO UPDATE SET
         scope = EXCLUDED.scope, access_token_enc = EXCLUDED.access_token_enc,
         refresh_token_enc = EXCLUDED.refresh_token_enc,
         id_token_enc = COALESCE(EXCLUDED.id_token_enc, session_token.id_token_enc),
         expires_at = EXCLUDED.expires_at, updated_at = now(),
         refreshed_count = session_token.refreshed_count + $11`,
      [
        idHash,
        p,
        fhirBase,
        token.tokenEndpoint,
        token.clientId,
        token.scope,
        this.secrets.seal(token.accessToken, aad(idHash, p, 'access')),
        token.refreshToken ? this.secrets.seal(token.refreshToken, aad(idHash, p, 'refresh')) : null,
        token.idToken ? this.secrets.seal(token.idToken, aad(idHash, p, 'id')) : null,
        token.expiresAt,
        refreshed ? 1 : 0,
      ],
    );
  }
}
