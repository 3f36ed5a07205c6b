import { query } from '@dtr/persistence';
import type { UdapAlg } from '@dtr/udap';
import type { DataSource } from 'typeorm';

export interface UdapIdentityRow {
  id: string;
  x5c: string[];
  san_uris: string[];
  subject: string;
  issuer: string;
  not_before: Date;
  not_after: Date;
  key_type: 'rsa' | 'ec';
  alg: UdapAlg;
  /** Ciphertext (SecretBox, AAD = `udap_identity:<id>`); never the key itself. */
  private_key_enc: string;
  fingerprint256: string;
  created_at: Date;
}

export interface TrustAnchorRow {
  id: string;
  community: string;
  pem: string;
  subject: string;
  not_after: Date;
  fingerprint256: string;
  created_at: Date;
}

const PUBLIC_COLUMNS = `id, x5c, san_uris, subject, issuer, not_before, not_after, key_type, alg, fingerprint256, created_at`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The `udap_identity` and `udap_trust_anchor` tables. Raw SQL here only; parsing and sealing live in UdapIdentityStore. */
export class UdapIdentityRepository {
  constructor(private readonly dataSource: DataSource) {}

  /** Inserts a certificate; false when the same certificate (fingerprint) is already stored. */
  async insert(row: Omit<UdapIdentityRow, 'created_at'>): Promise<boolean> {
    const inserted = await query(
      this.dataSource,
      `INSERT INTO udap_identity (id, x5c, san_uris, subject, issuer, not_before, not_after, key_type, alg,
                                  private_key_enc, fingerprint256)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
       ON CONFLICT (fingerprint256) DO NOTHING RETURNING id`,
      [
        row.id,
        JSON.stringify(row.x5c),
        row.san_uris,
        row.subject,
        row.issuer,
        row.not_before,
        row.not_after,
        row.key_type,
        row.alg,
        row.private_key_enc,
        row.fingerprint256,
      ],
    );
    return inserted.length > 0;
  }

  /** Every certificate, newest first, without its sealed key. */
  list(): Promise<Array<Omit<UdapIdentityRow, 'private_key_enc'>>> {
    return query(this.dataSource, `SELECT ${PUBLIC_COLUMNS} FROM udap_identity ORDER BY created_at DESC, id`);
  }

  async byFingerprint(fingerprint256: string): Promise<Omit<UdapIdentityRow, 'private_key_enc'> | undefined> {
    const [row] = await query<Omit<UdapIdentityRow, 'private_key_enc'>>(
      this.dataSource,
      `SELECT ${PUBLIC_COLUMNS} FROM udap_identity WHERE fingerprint256 = $1`,
      [fingerprint256],
    );
    return row;
  }

  /** The certificates naming `sanUri`, valid at `now`, the one expiring last first (with the sealed key). */
  forSan(sanUri: string, now: Date): Promise<UdapIdentityRow[]> {
    return query(
      this.dataSource,
      `SELECT ${PUBLIC_COLUMNS}, private_key_enc FROM udap_identity
       WHERE $1 = ANY(san_uris) AND not_before <= $2 AND not_after > $2
       ORDER BY not_after DESC, created_at DESC`,
      [sanUri, now],
    );
  }

  /** Whether any certificate (valid or not) names `sanUri`. */
  async hasSan(sanUri: string): Promise<boolean> {
    return (await query(this.dataSource, `SELECT 1 FROM udap_identity WHERE $1 = ANY(san_uris)`, [sanUri])).length > 0;
  }

  async remove(id: string): Promise<boolean> {
    if (!UUID.test(id)) return false;
    return (await query(this.dataSource, `DELETE FROM udap_identity WHERE id = $1 RETURNING id`, [id])).length > 0;
  }

  async insertAnchor(row: Omit<TrustAnchorRow, 'id' | 'created_at'>): Promise<boolean> {
    const inserted = await query(
      this.dataSource,
      `INSERT INTO udap_trust_anchor (community, pem, subject, not_after, fingerprint256) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (community, fingerprint256) DO NOTHING RETURNING id`,
      [row.community, row.pem, row.subject, row.not_after, row.fingerprint256],
    );
    return inserted.length > 0;
  }

  /** Anchors of one community, or of every community when `community` is undefined. */
  anchors(community?: string): Promise<TrustAnchorRow[]> {
    return community === undefined
      ? query(this.dataSource, `SELECT * FROM udap_trust_anchor ORDER BY community, created_at`)
      : query(this.dataSource, `SELECT * FROM udap_trust_anchor WHERE community = $1 ORDER BY created_at`, [community]);
  }

  async removeAnchor(id: string): Promise<boolean> {
    if (!UUID.test(id)) return false;
    return (await query(this.dataSource, `DELETE FROM udap_trust_anchor WHERE id = $1 RETURNING id`, [id])).length > 0;
  }
}
