import { DtrError } from '@dtr/kernel';
import type { DtrVersion } from '@dtr/fhir';
import { query } from '@dtr/persistence';
import type { DataSource } from 'typeorm';

export type SubmissionRoute = 'bundle' | 'pas-claim-submit' | 'cdex-submit-attachment';

/** A payer as stored: its mutual TLS client key sealed (SecretBox, AAD = `payer-client-certificate:<id>`). */
export interface StoredPayer {
  id: string;
  name: string;
  fhirBase: string;
  tokenEndpoint: string;
  clientId: string;
  signingAlg: 'RS384' | 'ES384';
  scopes: string[];
  igVersion: DtrVersion;
  submissionRoute: SubmissionRoute;
  coverageIdentifiers: string[];
  tokenSource: 'backend-services' | 'launch';
  clientCertificate: string | null;
  clientCertificateKeySealed: string | null;
  serverCa: string | null;
  /** How our Backend Services token requests authenticate: our JWKS keys, or a UDAP certificate (`udapSan`). */
  authMethod: 'private_key_jwt' | 'udap';
  udap: StoredPayerUdap | null;
}

/** Our UDAP registration at a payer. */
export interface StoredPayerUdap {
  /** The SAN URI we registered as. */
  san: string;
  community: string | null;
  /** What the payer granted at registration (null when registered by hand). */
  granted: Record<string, unknown> | null;
  /** When the client was cancelled at the payer (token requests are then refused here), else null. */
  cancelledAt: Date | null;
}

interface PayerRow {
  id: string;
  name: string;
  fhir_base: string;
  token_endpoint: string;
  client_id: string;
  signing_alg: 'RS384' | 'ES384';
  scopes: string;
  ig_version: DtrVersion;
  submission_route: SubmissionRoute;
  coverage_identifiers: string[];
  token_source: 'backend-services' | 'launch';
  client_certificate: string | null;
  client_certificate_key_sealed: string | null;
  server_ca: string | null;
  auth_method: 'private_key_jwt' | 'udap';
  udap_san: string | null;
  udap_community: string | null;
  udap_granted: Record<string, unknown> | null;
  udap_cancelled_at: Date | null;
}

function fromRow(row: PayerRow): StoredPayer {
  return {
    id: row.id,
    name: row.name,
    fhirBase: row.fhir_base,
    tokenEndpoint: row.token_endpoint,
    clientId: row.client_id,
    signingAlg: row.signing_alg,
    scopes: row.scopes.split(' ').filter(Boolean),
    igVersion: row.ig_version,
    submissionRoute: row.submission_route,
    coverageIdentifiers: row.coverage_identifiers,
    tokenSource: row.token_source,
    clientCertificate: row.client_certificate,
    clientCertificateKeySealed: row.client_certificate_key_sealed,
    serverCa: row.server_ca,
    authMethod: row.auth_method,
    udap: row.udap_san
      ? {
          san: row.udap_san,
          community: row.udap_community,
          granted: row.udap_granted,
          cancelledAt: row.udap_cancelled_at,
        }
      : null,
  };
}

/** The `payer` table. Raw SQL here only; the registration rules and sealing live in PayerRegistry. */
export class PayerRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Creates or replaces a payer. With `replaceCertificate` false the stored client certificate, key and server CA are
   * kept whatever `payer` says. CONFLICT when another payer has this FHIR base.
   */
  async save(payer: StoredPayer, replaceCertificate: boolean): Promise<void> {
    await query(
      this.dataSource,
      `INSERT INTO payer (id, name, fhir_base, token_endpoint, client_id, signing_alg, scopes, ig_version, submission_route,
                          coverage_identifiers, client_certificate, client_certificate_key_sealed, server_ca, token_source,
                          auth_method, udap_san, udap_community, udap_granted, udap_cancelled_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15, $16, $17, $18, $19, $20)
       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, fhir_base = EXCLUDED.fhir_base, token_endpoint = EXCLUDED.token_endpoint,
         client_id = EXCLUDED.client_id, signing_alg = EXCLUDED.signing_alg, scopes = EXCLUDED.scopes, ig_version = EXCLUDED.ig_version,
         submission_route = EXCLUDED.submission_route, coverage_identifiers = EXCLUDED.coverage_identifiers,
         token_source = EXCLUDED.token_source, auth_method = EXCLUDED.auth_method, udap_san = EXCLUDED.udap_san,
         udap_community = EXCLUDED.udap_community, udap_granted = EXCLUDED.udap_granted,
         udap_cancelled_at = EXCLUDED.udap_cancelled_at,
         client_certificate = CASE WHEN $14 THEN EXCLUDED.client_certificate ELSE payer.client_certificate END,
         client_certificate_key_sealed = CASE WHEN $14 THEN EXCLUDED.client_certificate_key_sealed ELSE payer.client_certificate_key_sealed END,
         server_ca = CASE WHEN $14 THEN EXCLUDED.server_ca ELSE payer.server_ca END,
         updated_at = now()`,
      [
        payer.id,
        payer.name,
        payer.fhirBase,
        payer.tokenEndpoint,
        payer.clientId,
        payer.signingAlg,
        payer.scopes.join(' '),
        payer.igVersion,
        payer.submissionRoute,
        payer.coverageIdentifiers,
        payer.clientCertificate,
        payer.clientCertificateKeySealed,
        payer.serverCa,
        replaceCertificate,
        payer.tokenSource,
        payer.authMethod,
        payer.udap?.san ?? null,
        payer.udap?.community ?? null,
        payer.udap?.granted ? JSON.stringify(payer.udap.granted) : null,
        payer.udap?.cancelledAt ?? null,
      ],
    ).catch((error: { driverError?: { code?: string }; code?: string }) => {
      if ((error.driverError?.code ?? error.code) === '23505')
        throw new DtrError('CONFLICT', 'another payer is registered with this fhirBase', { cause: error });
      throw error;
    });
  }

  /** Records our UDAP registration at a payer (its answer): client id, token endpoint and what was granted. */
  async saveUdap(id: string, clientId: string, tokenEndpoint: string, udap: StoredPayerUdap): Promise<boolean> {
    const rows = await query(
      this.dataSource,
      `UPDATE payer SET client_id = $2, token_endpoint = $3, auth_method = 'udap', udap_san = $4, udap_community = $5,
         udap_granted = $6, udap_cancelled_at = $7, updated_at = now()
       WHERE id = $1 RETURNING id`,
      [
        id,
        clientId,
        tokenEndpoint,
        udap.san,
        udap.community,
        udap.granted ? JSON.stringify(udap.granted) : null,
        udap.cancelledAt,
      ],
    );
    return rows.length > 0;
  }

  async list(): Promise<StoredPayer[]> {
    return (await query<PayerRow>(this.dataSource, 'SELECT * FROM payer ORDER BY id')).map(fromRow);
  }

  async get(id: string): Promise<StoredPayer | undefined> {
    const [row] = await query<PayerRow>(this.dataSource, 'SELECT * FROM payer WHERE id = $1', [id]);
    return row ? fromRow(row) : undefined;
  }

  async remove(id: string): Promise<boolean> {
    return (await query(this.dataSource, 'DELETE FROM payer WHERE id = $1 RETURNING id', [id])).length > 0;
  }
}
