import { DtrError } from '@dtr/kernel';
import { rowsOf } from '@dtr/persistence';
import { DTR_VERSIONS, type DtrVersion, type FhirResource } from '@dtr/fhir';
import { assertOutboundUrl, normaliseBaseUrl, type OutboundPolicy, type SecretBox } from '@dtr/smart';
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import type { TlsCredentials } from './mutual-tls-fetch.js';
import type { DataSource } from 'typeorm';
import { z } from 'zod';

type DtrIgVersion = DtrVersion;
type SubmissionRoute = 'bundle' | 'pas-claim-submit' | 'cdex-submit-attachment';

const payerInputSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and dashes'),
    name: z.string().min(1).max(200),
    fhirBase: z.url(),
    tokenEndpoint: z.url(),
    clientId: z.string().min(1).max(255),
    signingAlg: z.enum(['RS384', 'ES384']),
    scopes: z
      .array(
        z.string().regex(/^system\/[A-Za-z*]+\.[a-z*]+$/, 'Backend Services scopes are system/<Type>.<permissions>'),
      )
      .min(1),
    igVersion: z.enum(DTR_VERSIONS).default('2.2'),
    submissionRoute: z.enum(['bundle', 'pas-claim-submit', 'cdex-submit-attachment']).default('bundle'),
    /** `system|value` (or bare `value`) identifiers of the payer as Coverage.payor carries them. */
    coverageIdentifiers: z.array(z.string().min(1).max(500)).default([]),
    /**
     * Our client certificate for mutual TLS with this payer (PEM), its private key (PEM; stored sealed, never
     * returned) and, when the payer's server certificate is not from a public CA, that CA (PEM). Omitted: the stored
     * one is kept; null: removed.
     */
    clientCertificate: z
      .object({
        certificate: z
          .string()
          .max(20_000)
          .regex(/-----BEGIN CERTIFICATE-----/, 'a PEM certificate'),
        privateKey: z
          .string()
          .max(20_000)
          .regex(/-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'a PEM private key'),
        serverCa: z
          .string()
          .max(50_000)
          .regex(/-----BEGIN CERTIFICATE-----/, 'PEM CA certificate(s)')
          .optional(),
      })
      .strict()
      .nullable()
      .optional(),
  })
  .strict();

export interface Payer {
  id: string;
  name: string;
  fhirBase: string;
  tokenEndpoint: string;
  clientId: string;
  signingAlg: 'RS384' | 'ES384';
  scopes: string[];
  igVersion: DtrIgVersion;
  submissionRoute: SubmissionRoute;
  coverageIdentifiers: string[];
  /** Public facts of the mutual TLS client certificate, when there is one (its key is never returned). */
  clientCertificate: { subject: string; fingerprint256: string; validTo: string } | null;
}

interface PayerRow {
  id: string;
  name: string;
  fhir_base: string;
  token_endpoint: string;
  client_id: string;
  signing_alg: 'RS384' | 'ES384';
  scopes: string;
  ig_version: DtrIgVersion;
  submission_route: SubmissionRoute;
  coverage_identifiers: string[];
  client_certificate: string | null;
  client_certificate_key_sealed: string | null;
  server_ca: string | null;
}

function certificateFacts(pem: string): { subject: string; fingerprint256: string; validTo: string } {
  const x509 = new X509Certificate(pem);
  return {
    subject: x509.subject.replaceAll('\n', ', '),
    fingerprint256: x509.fingerprint256,
    validTo: new Date(x509.validTo).toISOString(),
  };
}

function toPayer(row: PayerRow): Payer {
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
    clientCertificate: row.client_certificate ? certificateFacts(row.client_certificate) : null,
  };
}

/**
 * The payers we may call. Outbound requests go only to a registered payer's own endpoints: no URL from a package,
 * a launch or a Coverage is ever called unless it is one of these.
 */
export class PayerRegistry {
  constructor(
    private readonly dataSource: DataSource,
    private readonly policy: OutboundPolicy,
    /** Seals client certificate keys; without it, a client certificate cannot be stored. */
    private readonly box?: SecretBox,
  ) {}

  async upsert(input: unknown): Promise<Payer> {
    const parsed = payerInputSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new DtrError('INVALID_INPUT', `${issue.path.join('.') || 'payer'}: ${issue.message}`, {
        expression: parsed.error.issues.map((i) => i.path.join('.') || 'payer'),
      });
    }
    const p = parsed.data;
    for (const [field, value] of [
      ['fhirBase', p.fhirBase],
      ['tokenEndpoint', p.tokenEndpoint],
    ] as const) {
      try {
        assertOutboundUrl(value, this.policy, field);
      } catch (error) {
        throw new DtrError(
          'INVALID_INPUT',
          `${field}: ${error instanceof Error ? error.message.replace(`${field} `, '') : 'not allowed'}`,
          { expression: [field] },
        );
      }
    }
    const fhirBase = normaliseBaseUrl(p.fhirBase);
    const certificate = p.clientCertificate
      ? this.checkCertificate(p.id, p.clientCertificate, [p.fhirBase, p.tokenEndpoint])
      : undefined;
    await this.dataSource
      .query(
        `INSERT INTO payer (id, name, fhir_base, token_endpoint, client_id, signing_alg, scopes, ig_version, submission_route,
                          coverage_identifiers, client_certificate, client_certificate_key_sealed, server_ca)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, fhir_base = EXCLUDED.fhir_base, token_endpoint = EXCLUDED.token_endpoint,
         client_id = EXCLUDED.client_id, signing_alg = EXCLUDED.signing_alg, scopes = EXCLUDED.scopes, ig_version = EXCLUDED.ig_version,
         submission_route = EXCLUDED.submission_route, coverage_identifiers = EXCLUDED.coverage_identifiers,
         client_certificate = CASE WHEN $14 THEN EXCLUDED.client_certificate ELSE payer.client_certificate END,
         client_certificate_key_sealed = CASE WHEN $14 THEN EXCLUDED.client_certificate_key_sealed ELSE payer.client_certificate_key_sealed END,
         server_ca = CASE WHEN $14 THEN EXCLUDED.server_ca ELSE payer.server_ca END,
         updated_at = now()`,
        [
          p.id,
          p.name,
          fhirBase,
          p.tokenEndpoint,
          p.clientId,
          p.signingAlg,
          p.scopes.join(' '),
          p.igVersion,
          p.submissionRoute,
          p.coverageIdentifiers,
          certificate?.certificate ?? null,
          certificate?.sealedKey ?? null,
          certificate?.serverCa ?? null,
          p.clientCertificate !== undefined,
        ],
      )
      .catch((error: { driverError?: { code?: string }; code?: string }) => {
        if ((error.driverError?.code ?? error.code) === '23505')
          throw new DtrError('CONFLICT', 'another payer is registered with this fhirBase');
        throw error;
      });
    return (await this.get(p.id))!;
  }

  /** Our mutual TLS credentials for this payer, key unsealed (for the outbound client only), when it has them. */
  async tlsCredentials(id: string): Promise<TlsCredentials | undefined> {
    const rows = (await this.dataSource.query(
      'SELECT client_certificate, client_certificate_key_sealed, server_ca FROM payer WHERE id = $1',
      [id],
    )) as PayerRow[];
    const row = rows[0];
    if (!row?.client_certificate || !row.client_certificate_key_sealed) return undefined;
    if (!this.box)
      throw new DtrError(
        'CONFIGURATION',
        `payer ${id} has a client certificate, but no key ring is configured to open its key (DTR_ENCRYPTION_KEYS)`,
      );
    return {
      certificate: row.client_certificate,
      privateKey: this.box.open(row.client_certificate_key_sealed, `payer-client-certificate:${id}`),
      ...(row.server_ca ? { serverCa: row.server_ca } : {}),
    };
  }

  /** A certificate and key that belong together, for https endpoints, with the key sealed for storage. */
  private checkCertificate(
    id: string,
    input: { certificate: string; privateKey: string; serverCa?: string | undefined },
    endpoints: string[],
  ): { certificate: string; sealedKey: string; serverCa: string | null } {
    const invalid = (field: string, message: string) =>
      new DtrError('INVALID_INPUT', `clientCertificate.${field}: ${message}`, {
        expression: [`clientCertificate.${field}`],
      });
    if (endpoints.some((e) => !e.startsWith('https://')))
      throw invalid('certificate', 'mutual TLS needs https fhirBase and tokenEndpoint');
    let x509: X509Certificate;
    try {
      x509 = new X509Certificate(input.certificate);
    } catch {
      throw invalid('certificate', 'is not a readable PEM certificate');
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(input.privateKey);
    } catch {
      throw invalid('privateKey', 'is not a readable PEM private key (an encrypted key is not accepted)');
    }
    if (!x509.checkPrivateKey(key)) throw invalid('privateKey', 'does not belong to the certificate');
    if (Date.parse(x509.validTo) < Date.now())
      throw invalid('certificate', `expired on ${new Date(x509.validTo).toISOString()}`);
    if (input.serverCa) {
      try {
        new X509Certificate(input.serverCa);
      } catch {
        throw invalid('serverCa', 'is not a readable PEM certificate');
      }
    }
    if (!this.box)
      throw new DtrError(
        'CONFIGURATION',
        'storing a client certificate needs the key ring (DTR_ENCRYPTION_KEYS) to seal its key',
      );
    return {
      certificate: input.certificate,
      sealedKey: this.box.seal(input.privateKey, `payer-client-certificate:${id}`),
      serverCa: input.serverCa ?? null,
    };
  }

  async list(): Promise<Payer[]> {
    return ((await this.dataSource.query('SELECT * FROM payer ORDER BY id')) as PayerRow[]).map(toPayer);
  }

  async get(id: string): Promise<Payer | undefined> {
    const rows = (await this.dataSource.query('SELECT * FROM payer WHERE id = $1', [id])) as PayerRow[];
    return rows[0] ? toPayer(rows[0]) : undefined;
  }

  async remove(id: string): Promise<boolean> {
    return rowsOf(await this.dataSource.query('DELETE FROM payer WHERE id = $1 RETURNING id', [id])).length > 0;
  }

  /**
   * The payer of a Coverage: by `Coverage.payor` identifiers (on the reference, or on the contained/referenced
   * Organization given) matching a registered payer's coverage identifiers.
   */
  async forCoverage(coverage: FhirResource, organizations: FhirResource[] = []): Promise<Payer | undefined> {
    const tokens = new Set<string>();
    const addIdentifier = (identifier: { system?: string; value?: string } | undefined) => {
      if (!identifier?.value) return;
      tokens.add(identifier.value);
      if (identifier.system) tokens.add(`${identifier.system}|${identifier.value}`);
    };
    const payors =
      (coverage['payor'] as
        Array<{ reference?: string; identifier?: { system?: string; value?: string } }> | undefined) ?? [];
    const contained = (coverage['contained'] as FhirResource[] | undefined) ?? [];
    for (const payor of payors) {
      addIdentifier(payor.identifier);
      const ref = payor.reference;
      const org = ref?.startsWith('#')
        ? contained.find((c) => c.id === ref.slice(1))
        : organizations.find((o) => ref && (ref === `Organization/${o.id}` || ref.endsWith(`/Organization/${o.id}`)));
      for (const identifier of (org?.['identifier'] as Array<{ system?: string; value?: string }> | undefined) ?? [])
        addIdentifier(identifier);
    }
    const payers = await this.list();
    return payers.find((p) => p.coverageIdentifiers.some((id) => tokens.has(id)));
  }
}
