import { query } from '@dtr/persistence';
import type { DataSource } from 'typeorm';
import type { RegistrationPurpose } from '../tenants/tenant.types.js';

export type LaunchKind = 'ehr' | 'standalone' | 'disclose';

/** A started authorization, keyed by the hash of its `state`; the PKCE verifier and nonce are sealed. */
export interface AttemptRow {
  state_hash: string;
  tenant_id: string;
  purpose: RegistrationPurpose;
  kind: LaunchKind;
  fhir_base: string;
  issuer: string | null;
  token_endpoint: string;
  code_verifier_enc: string;
  nonce_hash: string | null;
  browser_binding_hash: string;
  session_id_hash: string | null;
  expires_at: Date;
}

/** The `launch_attempt` table. Raw SQL here only; the launch rules live in LaunchService. */
export class LaunchAttemptRepository {
  constructor(private readonly dataSource: DataSource) {}

  async insert(attempt: AttemptRow): Promise<void> {
    await query(
      this.dataSource,
      `INSERT INTO launch_attempt (state_hash, tenant_id, purpose, kind, fhir_base, issuer, token_endpoint,
                                   code_verifier_enc, nonce_hash, browser_binding_hash, session_id_hash, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
      [
        attempt.state_hash,
        attempt.tenant_id,
        attempt.purpose,
        attempt.kind,
        attempt.fhir_base,
        attempt.issuer,
        attempt.token_endpoint,
        attempt.code_verifier_enc,
        attempt.nonce_hash,
        attempt.browser_binding_hash,
        attempt.session_id_hash,
        attempt.expires_at,
      ],
    );
  }

  /** The attempt for this state if it is unused and unexpired at `now`, marking it used: a state works once. */
  async consume(stateHash: string, now: Date): Promise<Omit<AttemptRow, 'expires_at'> | undefined> {
    const [row] = await query<Omit<AttemptRow, 'expires_at'>>(
      this.dataSource,
      `UPDATE launch_attempt SET used_at = now()
       WHERE state_hash = $1 AND used_at IS NULL AND expires_at > $2
       RETURNING state_hash, tenant_id, purpose, kind, fhir_base, issuer, token_endpoint, code_verifier_enc, nonce_hash,
                 browser_binding_hash, session_id_hash`,
      [stateHash, now],
    );
    return row;
  }
}
