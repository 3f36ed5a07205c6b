import { query } from '@dtr/persistence';
import type { DataSource, EntityManager } from 'typeorm';
import type { LaunchContext } from '../launch-context.js';
import type { RegistrationPurpose } from '../tenants/tenant.types.js';

export interface SessionRow {
  id_hash: string;
  tenant_id: string;
  fhir_base: string;
  patient: string | null;
  encounter: string | null;
  fhir_user: string | null;
  /** The launch context; the clinician's choice in the order picker only sealed (`chosenSealed`). */
  context: LaunchContext & { singleClient?: boolean; chosenSealed?: string };
  created_at: Date;
  expires_at: Date;
}

export type NewSessionRow = Omit<SessionRow, 'created_at'> & { last_seen_at: Date };

/** A token row: the tokens are ciphertext (sealed by SessionStore). */
export interface TokenRow {
  session_id_hash: string;
  /** The tenant of the token's session (the registration a refresh authenticates with). */
  tenant_id: string;
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

export type TokenWrite = Omit<TokenRow, 'refreshed_count' | 'tenant_id'>;

/**
 * The `app_session` and `session_token` tables. Raw SQL here only; sealing and the session rules live in SessionStore.
 * `transaction` hands out a repository bound to one transaction (for the token row lock).
 */
export class SessionRepository {
  constructor(private readonly db: DataSource | EntityManager) {}

  transaction<T>(fn: (tx: SessionRepository) => Promise<T>): Promise<T> {
    return this.db.transaction((manager) => fn(new SessionRepository(manager)));
  }

  async insertSession(row: NewSessionRow): Promise<void> {
    await query(
      this.db,
      `INSERT INTO app_session (id_hash, tenant_id, fhir_base, patient, encounter, fhir_user, context, expires_at,
                                last_seen_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [
        row.id_hash,
        row.tenant_id,
        row.fhir_base,
        row.patient,
        row.encounter,
        row.fhir_user,
        JSON.stringify(row.context),
        row.expires_at,
        row.last_seen_at,
      ],
    );
  }

  /**
   * The session with this id hash if it is live at `now` (not revoked, not past its lifetime, used since `idleSince`),
   * marking it seen.
   */
  async touchLive(idHash: string, now: Date, idleSince: Date): Promise<SessionRow | undefined> {
    const [row] = await query<SessionRow>(
      this.db,
      `UPDATE app_session SET last_seen_at = $2
       WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_seen_at > $3
       RETURNING id_hash, tenant_id, fhir_base, patient, encounter, fhir_user, context, created_at, expires_at`,
      [idHash, now, idleSince],
    );
    return row;
  }

  async updateContext(idHash: string, context: SessionRow['context']): Promise<void> {
    await query(this.db, `UPDATE app_session SET context = $2 WHERE id_hash = $1 AND revoked_at IS NULL`, [
      idHash,
      JSON.stringify(context),
    ]);
  }

  /** Revokes a session and deletes its tokens (the ciphertexts are gone, not only unusable). */
  async revoke(idHash: string): Promise<void> {
    await query(this.db, `UPDATE app_session SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL`, [
      idHash,
    ]);
    await query(this.db, `DELETE FROM session_token WHERE session_id_hash = $1`, [idHash]);
  }

  /**
   * If this session has ended (expired, idle or revoked): marks it revoked, so it never comes back (a clock running
   * behind on another instance), and deletes its tokens. Returns how many tokens were deleted.
   */
  async endIfEnded(idHash: string, now: Date, idleSince: Date): Promise<number> {
    const ended = await query(
      this.db,
      `UPDATE app_session SET revoked_at = COALESCE(revoked_at, $2)
       WHERE id_hash = $1 AND (revoked_at IS NOT NULL OR expires_at <= $2 OR last_seen_at <= $3) RETURNING 1`,
      [idHash, now, idleSince],
    );
    if (ended.length === 0) return 0;
    return (await query(this.db, `DELETE FROM session_token WHERE session_id_hash = $1 RETURNING 1`, [idHash])).length;
  }

  /** A session's token row for a purpose; `lock` holds the row until the transaction ends (FOR UPDATE). */
  async token(idHash: string, purpose: RegistrationPurpose, lock = false): Promise<TokenRow | undefined> {
    const [row] = await query<TokenRow>(
      this.db,
      `SELECT t.session_id_hash, s.tenant_id, t.purpose, t.fhir_base, t.token_endpoint, t.client_id, t.scope,
              t.access_token_enc, t.refresh_token_enc, t.id_token_enc, t.expires_at, t.refreshed_count
       FROM session_token t JOIN app_session s ON s.id_hash = t.session_id_hash
       WHERE t.session_id_hash = $1 AND t.purpose = $2${lock ? ' FOR UPDATE OF t' : ''}`,
      [idHash, purpose],
    );
    return row;
  }

  /** Stores a session's token for a purpose (replacing the previous one); an id token not given is kept. */
  async writeToken(row: TokenWrite, refreshed: boolean): Promise<void> {
    await query(
      this.db,
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
        row.session_id_hash,
        row.purpose,
        row.fhir_base,
        row.token_endpoint,
        row.client_id,
        row.scope,
        row.access_token_enc,
        row.refresh_token_enc,
        row.id_token_enc,
        row.expires_at,
        refreshed ? 1 : 0,
      ],
    );
  }
}
