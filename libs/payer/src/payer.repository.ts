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
                          coverage_identifiers, client_certificate, client_certificate_key_sealed, server_ca, token_source)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15)
       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, fhir_base = EXCLUDED.fhir_base, token_endpoint = EXCLUDED.token_endpoint,
         client_id = EXCLUDED.client_id, signing_alg = EXCLUDED.signing_alg, scopes = EXCLUDED.scopes, ig_version = EXCLUDED.ig_version,
         submission_route = EXCLUDED.submission_route, coverage_identifiers = EXCLUDED.coverage_identifiers,
         token_source = EXCLUDED.token_source,
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
      ],
    ).catch((error: { driverError?: { code?: string }; code?: string }) => {
      if ((error.driverError?.code ?? error.code) === '23505')
        throw new DtrError('CONFLICT', 'another payer is registered with this fhirBase', { cause: error });
      throw error;
    });
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
