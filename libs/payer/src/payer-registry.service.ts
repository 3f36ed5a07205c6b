import { DtrError } from '@dtr/kernel';
import { DTR_VERSIONS, type DtrVersion, type FhirResource } from '@dtr/fhir';
import {
  assertOutboundUrl,
  type BackendServicesRegistration,
  normaliseBaseUrl,
  type OutboundPolicy,
  type SecretBox,
} from '@dtr/smart';
import type { StoredPayerUdap } from './payer.repository.js';
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import type { TlsCredentials } from './mutual-tls-fetch.js';
import { PayerRepository, type StoredPayer, type SubmissionRoute } from './payer.repository.js';
import type { DataSource } from 'typeorm';
import { z } from 'zod';

type DtrIgVersion = DtrVersion;

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
    /**
     * `system|value` identifiers of the payer as Coverage.payor (or its Organization) carries them. A bare value is
     * refused: the same value under another system may be another insurer.
     */
    coverageIdentifiers: z
      .array(
        z
          .string()
          .max(500)
          .regex(
            /^[^|\s]+\|[^|\s]+$/,
            'each must be system|value (e.g. http://example.org/payer-id|ACME): a bare value could match another insurer',
          ),
      )
      .default([]),
    /**
     * Which token our calls to this payer carry: our SMART Backend Services token (`backend-services`, the default),
     * or the launch's EHR token (`launch`), for test harnesses that are EHR and payer at once. `launch` is used only
     * when the payer's fhirBase has the session's EHR origin, and is refused in production unless allowed.
     */
    tokenSource: z.enum(['backend-services', 'launch']).default('backend-services'),
    /**
     * How our token requests authenticate: `private_key_jwt` (our JWKS keys) or `udap` (the certificate of `udapSan`;
     * usually set by `dtr payer register-udap`). Omitted: the stored method (and UDAP registration) is kept.
     */
    authMethod: z.enum(['private_key_jwt', 'udap']).optional(),
    udapSan: z.url().max(500).optional(),
    /**
     * The stored UDAP registration as `GET /admin/payers` shows it: accepted so a payer read can be put back, and
     * ignored (it changes only through `register-udap`).
     */
    udap: z.looseObject({}).nullable().optional(),
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
  tokenSource: 'backend-services' | 'launch';
  /** Public facts of the mutual TLS client certificate, when there is one (its key is never returned). */
  clientCertificate: { subject: string; fingerprint256: string; validTo: string } | null;
  authMethod: 'private_key_jwt' | 'udap';
  /** Our UDAP registration at this payer, when authMethod is `udap`. */
  udap: {
    san: string;
    community: string | null;
    granted: Record<string, unknown> | null;
    cancelledAt: string | null;
  } | null;
}

function certificateFacts(pem: string): { subject: string; fingerprint256: string; validTo: string } {
  const x509 = new X509Certificate(pem);
  return {
    subject: x509.subject.replaceAll('\n', ', '),
    fingerprint256: x509.fingerprint256,
    validTo: new Date(x509.validTo).toISOString(),
  };
}

/** The view of a stored payer: its certificate's public facts, never its key. */
function toPayer(stored: StoredPayer): Payer {
  const { clientCertificate, clientCertificateKeySealed: _key, serverCa: _ca, udap, ...payer } = stored;
  return {
    ...payer,
    clientCertificate: clientCertificate ? certificateFacts(clientCertificate) : null,
    udap: udap ? { ...udap, cancelledAt: udap.cancelledAt?.toISOString() ?? null } : null,
  };
}

/**
 * The Backend Services registration our token requests to `payer` use: private_key_jwt, or UDAP with the SAN URI it
 * was registered as. A cancelled UDAP client is refused here, before any request: the operator's log gets what to
 * run, a user is told in plain words that an administrator must register this service with the payer again.
 */
export function backendServicesRegistration(payer: Payer, connection?: typeof fetch): BackendServicesRegistration {
  if (payer.authMethod === 'udap' && payer.udap?.cancelledAt)
    throw new DtrError(
      'CONFIGURATION',
      `our UDAP client at payer ${payer.id} was cancelled on ${payer.udap.cancelledAt}: register again with "dtr payer register-udap ${payer.id} --san <uri>"`,
      {
        userMessage: `${payer.name} cannot be reached: this service's registration with this payer was cancelled, and an administrator must register it again`,
      },
    );
  return {
    tokenEndpoint: payer.tokenEndpoint,
    clientId: payer.clientId,
    signingAlg: payer.signingAlg,
    scopes: payer.scopes,
    ...(payer.authMethod === 'udap' && payer.udap ? { authMethod: 'udap' as const, udapSan: payer.udap.san } : {}),
    ...(connection ? { fetch: connection } : {}),
  };
}

/**
 * The payers we may call. Outbound requests go only to a registered payer's own endpoints: no URL from a package,
 * a launch or a Coverage is ever called unless it is one of these.
 */
export class PayerRegistry {
  private readonly payers: PayerRepository;

  constructor(
    dataSource: DataSource,
    private readonly policy: OutboundPolicy,
    /** Seals client certificate keys; without it, a client certificate cannot be stored. */
    private readonly box?: SecretBox,
    /** Whether a payer may be registered with `tokenSource: launch` (off in production unless allowed). */
    private readonly allowLaunchToken = true,
  ) {
    this.payers = new PayerRepository(dataSource);
  }

  async upsert(input: unknown): Promise<Payer> {
    const parsed = payerInputSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new DtrError('INVALID_INPUT', `${issue.path.join('.') || 'payer'}: ${issue.message}`, {
        expression: parsed.error.issues.map((i) => i.path.join('.') || 'payer'),
      });
    }
    const p = parsed.data;
    if (p.tokenSource === 'launch' && !this.allowLaunchToken)
      throw new DtrError(
        'INVALID_INPUT',
        'tokenSource: launch is refused in the production profile unless DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER=true',
        { expression: ['tokenSource'] },
      );
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
    const { authMethod, udap } = await this.authOf(p);
    const certificate = p.clientCertificate
      ? this.checkCertificate(p.id, p.clientCertificate, [p.fhirBase, p.tokenEndpoint])
      : undefined;
    await this.payers.save(
      {
        id: p.id,
        name: p.name,
        fhirBase,
        tokenEndpoint: p.tokenEndpoint,
        clientId: p.clientId,
        signingAlg: p.signingAlg,
        scopes: p.scopes,
        igVersion: p.igVersion,
        submissionRoute: p.submissionRoute,
        coverageIdentifiers: p.coverageIdentifiers,
        tokenSource: p.tokenSource,
        clientCertificate: certificate?.certificate ?? null,
        clientCertificateKeySealed: certificate?.sealedKey ?? null,
        serverCa: certificate?.serverCa ?? null,
        authMethod,
        udap,
      },
      p.clientCertificate !== undefined,
    );
    return (await this.get(p.id))!;
  }

  /**
   * The auth method a put keeps or sets: omitted keeps the stored one; `udap` needs a SAN URI (given or stored), and a
   * registration put again under the same client id keeps what the payer granted.
   */
  private async authOf(p: {
    id: string;
    clientId: string;
    authMethod?: 'private_key_jwt' | 'udap' | undefined;
    udapSan?: string | undefined;
  }): Promise<{ authMethod: 'private_key_jwt' | 'udap'; udap: StoredPayerUdap | null }> {
    const stored = await this.payers.get(p.id);
    const authMethod = p.authMethod ?? stored?.authMethod ?? 'private_key_jwt';
    if (authMethod === 'private_key_jwt') {
      if (p.udapSan)
        throw new DtrError('INVALID_INPUT', 'udapSan: is only for authMethod udap', { expression: ['udapSan'] });
      return { authMethod, udap: null };
    }
    const san = p.udapSan ?? stored?.udap?.san;
    if (!san)
      throw new DtrError('INVALID_INPUT', 'udapSan: is required for authMethod udap (the SAN URI we registered as)', {
        expression: ['udapSan'],
      });
    const same = stored?.udap && stored.udap.san === san && stored.clientId === p.clientId;
    return {
      authMethod,
      udap: same ? stored.udap : { san, community: null, granted: null, cancelledAt: null },
    };
  }

  /** Stores our UDAP registration's answer (client id, the token endpoint from the payer's signed metadata). */
  async saveUdapRegistration(
    id: string,
    clientId: string,
    tokenEndpoint: string,
    udap: StoredPayerUdap,
  ): Promise<Payer> {
    if (!(await this.payers.saveUdap(id, clientId, tokenEndpoint, udap)))
      throw new DtrError('NOT_FOUND', `no payer ${id}`);
    return (await this.get(id))!;
  }

  /** Our mutual TLS credentials for this payer, key unsealed (for the outbound client only), when it has them. */
  async tlsCredentials(id: string): Promise<TlsCredentials | undefined> {
    const row = await this.payers.get(id);
    if (!row?.clientCertificate || !row.clientCertificateKeySealed) return undefined;
    if (!this.box)
      throw new DtrError(
        'CONFIGURATION',
        `payer ${id} has a client certificate, but no key ring is configured to open its key (DTR_ENCRYPTION_KEYS)`,
      );
    return {
      certificate: row.clientCertificate,
      privateKey: this.box.open(row.clientCertificateKeySealed, `payer-client-certificate:${id}`),
      ...(row.serverCa ? { serverCa: row.serverCa } : {}),
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
    return (await this.payers.list()).map(toPayer);
  }

  async get(id: string): Promise<Payer | undefined> {
    const stored = await this.payers.get(id);
    return stored ? toPayer(stored) : undefined;
  }

  async remove(id: string): Promise<boolean> {
    return this.payers.remove(id);
  }

  /**
   * The payer of a Coverage: by `Coverage.payor` identifiers (on the reference, or on the contained/referenced
   * Organization given) matching a registered payer's coverage identifiers, as `system|value` only: an identifier
   * without a system never matches (the same value may be another insurer's under another system).
   */
  async forCoverage(coverage: FhirResource, organizations: FhirResource[] = []): Promise<Payer | undefined> {
    const tokens = new Set<string>();
    const addIdentifier = (identifier: { system?: string; value?: string } | undefined) => {
      if (identifier?.value && identifier.system) tokens.add(`${identifier.system}|${identifier.value}`);
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
