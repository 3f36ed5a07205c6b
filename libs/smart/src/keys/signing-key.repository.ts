import { DtrError } from '@dtr/kernel';
import { query } from '@dtr/persistence';
import type { JWK } from 'jose';
import type { DataSource } from 'typeorm';
import type { SigningAlg } from '../tenants/tenant.types.js';
import { isUniqueViolation } from '../unique-violation.js';

export type SigningKeyStatus = 'active' | 'retiring' | 'retired';

export interface KeyRow {
  kid: string;
  alg: SigningAlg;
  public_jwk: JWK;
  /** Ciphertext (SecretBox, AAD = `client_signing_key:<kid>`). */
  private_jwk_enc: string;
  status: SigningKeyStatus;
  created_at: Date;
  retire_after: Date | null;
}

/** The `client_signing_key` table. Raw SQL here only; key generation, sealing and rotation rules live in SigningKeyStore. */
export class SigningKeyRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Makes `key` the active key of its algorithm; the previously active one retires after `retireAfter`. CONFLICT when
   * another instance activated a key of that algorithm at the same moment (one active key per algorithm).
   */
  async activate(
    key: Pick<KeyRow, 'kid' | 'alg' | 'public_jwk' | 'private_jwk_enc'>,
    retireAfter: Date,
  ): Promise<void> {
    try {
      await this.dataSource.transaction(async (manager) => {
        await query(
          manager,
          `UPDATE client_signing_key SET status = 'retiring', retire_after = $2 WHERE alg = $1 AND status = 'active'`,
          [key.alg, retireAfter],
        );
        await query(
          manager,
          `INSERT INTO client_signing_key (kid, alg, public_jwk, private_jwk_enc, status) VALUES ($1, $2, $3, $4, 'active')`,
          [key.kid, key.alg, JSON.stringify(key.public_jwk), key.private_jwk_enc],
        );
      });
    } catch (error) {
      if (isUniqueViolation(error))
        throw new DtrError('CONFLICT', `another ${key.alg} key was activated at the same time`, { cause: error });
      throw error;
    }
  }

  /** Every key, newest first, without its private part. */
  list(): Promise<Array<Omit<KeyRow, 'public_jwk' | 'private_jwk_enc'>>> {
    return query(
      this.dataSource,
      `SELECT kid, alg, status, created_at, retire_after FROM client_signing_key ORDER BY created_at DESC`,
    );
  }

  /** Public keys of active keys and of retiring keys still in their grace period at `now`, newest first. */
  async publishedPublicJwks(now: Date): Promise<JWK[]> {
    const rows = await query<Pick<KeyRow, 'public_jwk'>>(
      this.dataSource,
      `SELECT public_jwk FROM client_signing_key
       WHERE status = 'active' OR (status = 'retiring' AND (retire_after IS NULL OR retire_after > $1))
       ORDER BY created_at DESC`,
      [now],
    );
    return rows.map((r) => r.public_jwk);
  }

  async active(alg: SigningAlg): Promise<Pick<KeyRow, 'kid' | 'private_jwk_enc'> | undefined> {
    const [row] = await query<Pick<KeyRow, 'kid' | 'private_jwk_enc'>>(
      this.dataSource,
      `SELECT kid, private_jwk_enc FROM client_signing_key WHERE alg = $1 AND status = 'active'`,
      [alg],
    );
    return row;
  }

  /** Retiring keys whose grace period ended by `now` become retired. */
  async retireExpired(now: Date): Promise<void> {
    await query(
      this.dataSource,
      `UPDATE client_signing_key SET status = 'retired' WHERE status = 'retiring' AND retire_after <= $1`,
      [now],
    );
  }
}
