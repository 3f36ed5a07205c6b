import { DtrError } from '@dtr/kernel';
import type { DataSource } from 'typeorm';
import { z } from 'zod';
import { assertOutboundUrl, isLoopback, normaliseBaseUrl, type OutboundPolicy } from '../outbound-policy.js';
import { SecretBox } from '../secret-box.js';
import { type StoredTenant, TenantRepository } from './tenant.repository.js';
import type { ClientAuthMethod, DiscloseMode, RegistrationPurpose, SigningAlg } from './tenant.types.js';

const registrationSchema = z
  .object({
    clientId: z.string().min(1).max(255),
    authMethod: z.enum(['client_secret_basic', 'private_key_jwt', 'udap']),
    clientSecret: z.string().min(8).max(1024).optional(),
    signingAlg: z.enum(['RS384', 'ES384']).optional(),
    /** With `udap`: the SAN URI of our certificate this client was registered as (see `dtr tenant register-udap`). */
    udapSan: z.url().max(500).optional(),
    scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'scopes are space-free tokens')).min(1),
    redirectUri: z.url(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.authMethod === 'client_secret_basic' && !r.clientSecret) {
      ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'is required for client_secret_basic' });
    }
    if (r.authMethod === 'private_key_jwt' && r.clientSecret) {
      ctx.addIssue({ code: 'custom', path: ['clientSecret'], message: 'must not be given for private_key_jwt' });
    }
    if (r.authMethod === 'udap' && !r.udapSan) {
      ctx.addIssue({
        code: 'custom',
        path: ['udapSan'],
        message: 'is required for udap (the SAN URI we registered as)',
      });
    }
    if (r.authMethod === 'udap' && (r.clientSecret || r.signingAlg)) {
      ctx.addIssue({ code: 'custom', path: ['authMethod'], message: 'udap takes neither clientSecret nor signingAlg' });
    }
    if (r.authMethod !== 'udap' && r.udapSan) {
      ctx.addIssue({ code: 'custom', path: ['udapSan'], message: 'is only for authMethod udap' });
    }
    if (r.authMethod === 'private_key_jwt' && !r.signingAlg) {
      ctx.addIssue({
        code: 'custom',
        path: ['signingAlg'],
        message: 'is required for private_key_jwt (RS384 or ES384)',
      });
    }
  });

export const tenantInputSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and dashes'),
    name: z.string().min(1).max(200),
    fhirBase: z.url(),
    discloseMode: z.enum(['user-delegated', 'system']),
    singleClient: z.boolean().default(false),
    frameAncestors: z.array(z.string().max(300)).max(20, 'at most 20 origins').default([]),
    /**
     * UDAP Tiered OAuth: the OpenID Connect identity provider (its base URL) the EHR is asked to authenticate the
     * user with, when the EHR's UDAP metadata offers `udap_to`.
     */
    udapIdp: z.url().max(500).nullable().default(null),
    supplement: registrationSchema,
    disclose: registrationSchema.optional(),
  })
  .strict();

export type TenantInput = z.input<typeof tenantInputSchema>;
type RegistrationInput = z.infer<typeof registrationSchema>;

interface RegistrationView {
  purpose: RegistrationPurpose;
  clientId: string;
  authMethod: ClientAuthMethod;
  hasSecret: boolean;
  signingAlg: SigningAlg | null;
  scopes: string[];
  redirectUri: string;
  /** With `udap`: the SAN URI we registered as, the community, and what the EHR granted. */
  udapSan: string | null;
  udapCommunity: string | null;
  udapGranted: Record<string, unknown> | null;
}

export interface TenantView {
  id: string;
  name: string;
  fhirBase: string;
  discloseMode: DiscloseMode;
  singleClient: boolean;
  /** Origins that may embed the app in a frame (CSP frame-ancestors, besides our own); empty: none. */
  frameAncestors: string[];
  /** UDAP Tiered OAuth identity provider, when set. */
  udapIdp: string | null;
  registrations: RegistrationView[];
}

/** Decrypted credentials of one registration, for the token endpoint only. */
export interface RegistrationCredentials {
  tenantId: string;
  purpose: RegistrationPurpose;
  clientId: string;
  authMethod: ClientAuthMethod;
  clientSecret?: string;
  signingAlg?: SigningAlg;
  scopes: string[];
  redirectUri: string;
  /** With `udap`: which of our certificates signs (by SAN URI) and the community it was registered in. */
  udapSan?: string;
  udapCommunity?: string;
}

/** Our UDAP registration at an EHR, as `dtr tenant register-udap` stores it. */
export interface UdapTenantRegistration {
  clientId: string;
  sanUri: string;
  community: string | null;
  granted: Record<string, unknown>;
  scopes: string[];
  redirectUri: string;
}

/** SMART v1 `.write`/`.*` and v2 scopes with c, u or d. */
export function isWriteScope(scope: string): boolean {
  const match = /^(patient|user|system)\/[A-Za-z*]+\.(.+)$/.exec(scope);
  if (!match) return false;
  const permissions = match[2]!.split('?')[0]!;
  if (permissions === 'write' || permissions === '*') return true;
  return /^c?r?u?d?s?$/.test(permissions) && /[cud]/.test(permissions);
}

/**
 * What the `supplement` identity may write: the DTR QuestionnaireResponse itself (drafts and the completed response
 * are EHR documentation), created and updated, and nothing else. SMART v1 `patient|user/QuestionnaireResponse.write`
 * and v2 permission sets with `c` and/or `u` (reads and searches may ride along) but never `d`; `*` types, `.*` and
 * `system/` levels are not supplementing a user's documentation.
 * @see https://hl7.org/fhir/us/davinci-dtr/specification.html (storing QuestionnaireResponses in the EHR)
 * @see https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-fhir-resources
 */
export function isSupplementWriteScope(scope: string): boolean {
  const match = /^(patient|user)\/QuestionnaireResponse\.([a-z]+)$/.exec(scope);
  if (!match) return false;
  const permissions = match[2]!;
  return permissions === 'write' || (/^c?r?u?s?$/.test(permissions) && /[cu]/.test(permissions));
}

/**
 * One `frameAncestors` entry: an origin exactly (`https://host[:port]`, no path), https, or http on a loopback host
 * where the policy allows insecure loopback (development and tests). Wildcards and CSP keywords are refused: a
 * wildcard would let every host under a domain frame a clinician's session. Returns the origin, normalised.
 */
function frameAncestorOrigin(value: string, policy: OutboundPolicy): string {
  if (value.includes('*')) throw new Error('wildcards are not accepted; list each origin (https://ehr.example.org)');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error('is not an origin (https://host or https://host:port)');
  }
  if (url.origin === 'null' || `${url.origin}/` !== url.href.replace(/\/?$/, '/') || url.username || url.password) {
    throw new Error('must be an origin only (scheme, host and port; no path, query or credentials)');
  }
  if (url.protocol === 'https:') return url.origin;
  if (url.protocol === 'http:' && policy.allowInsecureLoopback && isLoopback(url)) return url.origin;
  throw new Error(
    policy.allowInsecureLoopback
      ? 'must use https (http only on a loopback host: localhost, 127.0.0.1, [::1])'
      : 'must use https',
  );
}

const secretAad = (tenantId: string, purpose: RegistrationPurpose) => `ehr_registration:${tenantId}:${purpose}`;

/**
 * The EHRs allowed to launch us. Registered by an administrator (admin API or CLI); an `iss` that is not here is
 * refused before any request is made to it.
 */
export class TenantRegistry {
  private readonly tenants: TenantRepository;

  constructor(
    dataSource: DataSource,
    private readonly secrets: SecretBox,
    private readonly policy: OutboundPolicy,
  ) {
    this.tenants = new TenantRepository(dataSource);
  }

  /** Checks the input and the rules of the two client identities; throws INVALID_INPUT naming the field. */
  validate(input: unknown): z.infer<typeof tenantInputSchema> {
    const parsed = tenantInputSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const where = issue.path.join('.') || 'tenant';
      throw new DtrError('INVALID_INPUT', `${where}: ${issue.message}`, {
        expression: parsed.error.issues.map((i) => i.path.join('.') || 'tenant'),
      });
    }
    const t = parsed.data;
    const fail = (field: string, message: string): never => {
      throw new DtrError('INVALID_INPUT', `${field}: ${message}`, { expression: [field] });
    };
    try {
      assertOutboundUrl(t.fhirBase, this.policy, 'fhirBase');
    } catch (error) {
      fail('fhirBase', error instanceof Error ? error.message.replace(/^fhirBase /, '') : 'is not allowed');
    }
    t.frameAncestors = [
      ...new Set(
        t.frameAncestors.map((origin, i) => {
          try {
            return frameAncestorOrigin(origin, this.policy);
          } catch (error) {
            return fail(`frameAncestors.${i}`, `${(error as Error).message} (got ${JSON.stringify(origin)})`);
          }
        }),
      ),
    ];
    if (t.singleClient) {
      if (t.disclose) fail('disclose', 'must be absent when singleClient is set (the one client does both)');
    } else {
      if (!t.disclose) fail('disclose', 'is required unless singleClient is set (two client identities)');
      const write = t.supplement.scopes.filter((s) => isWriteScope(s) && !isSupplementWriteScope(s));
      if (write.length > 0) {
        fail(
          'supplement.scopes',
          `may write only the DTR QuestionnaireResponse (create/update, e.g. user/QuestionnaireResponse.cu); remove ${write.join(' ')}`,
        );
      }
      if (t.disclose!.clientId === t.supplement.clientId) {
        fail('disclose.clientId', 'must differ from the supplement client id so the EHR can tell the two apart');
      }
    }
    const disclosing = t.disclose ?? t.supplement;
    const prefix = disclosing === t.supplement ? 'supplement' : 'disclose';
    if (!disclosing.scopes.some(isWriteScope)) {
      fail(`${prefix}.scopes`, 'needs a write scope for QuestionnaireResponse (e.g. user/QuestionnaireResponse.cu)');
    }
    if (t.discloseMode === 'system' && !t.singleClient) {
      if (disclosing.authMethod === 'client_secret_basic') {
        fail('disclose.authMethod', 'system-level disclosure uses SMART Backend Services: private_key_jwt or udap');
      }
      const nonSystem = disclosing.scopes.filter((s) => !s.startsWith('system/'));
      if (nonSystem.length > 0)
        fail('disclose.scopes', `system-level disclosure takes system/ scopes only; not ${nonSystem.join(' ')}`);
    }
    return t;
  }

  async upsert(input: unknown): Promise<TenantView> {
    const t = this.validate(input);
    const fhirBase = normaliseBaseUrl(t.fhirBase);
    const clash = await this.tenants.findByFhirBase(fhirBase);
    if (clash && clash.id !== t.id) {
      throw new DtrError('CONFLICT', `fhirBase is already registered as tenant ${clash.id}`);
    }
    const registrations: Array<[RegistrationPurpose, RegistrationInput]> = [['supplement', t.supplement]];
    if (t.disclose) registrations.push(['disclose', t.disclose]);
    // A UDAP registration put again under the same client id keeps what the EHR granted and its community.
    const before = (await this.tenants.get(t.id))?.registrations ?? [];
    const kept = (purpose: RegistrationPurpose, r: RegistrationInput) => {
      const previous = before.find(
        (b) => b.purpose === purpose && b.authMethod === 'udap' && b.clientId === r.clientId,
      );
      return r.authMethod === 'udap' && previous
        ? { udapCommunity: previous.udapCommunity, udapGranted: previous.udapGranted }
        : { udapCommunity: null, udapGranted: null };
    };
    await this.tenants.save({
      id: t.id,
      name: t.name,
      fhirBase,
      discloseMode: t.discloseMode,
      singleClient: t.singleClient,
      frameAncestors: t.frameAncestors,
      udapIdp: t.udapIdp,
      registrations: registrations.map(([purpose, r]) => ({
        purpose,
        clientId: r.clientId,
        authMethod: r.authMethod,
        clientSecretEnc: r.clientSecret ? this.secrets.seal(r.clientSecret, secretAad(t.id, purpose)) : null,
        signingAlg: r.signingAlg ?? null,
        scopes: r.scopes.join(' '),
        redirectUri: r.redirectUri,
        udapSan: r.udapSan ?? null,
        ...kept(purpose, r),
      })),
    });
    return (await this.get(t.id))!;
  }

  async list(): Promise<TenantView[]> {
    return (await this.tenants.list()).map(toView);
  }

  async get(id: string): Promise<TenantView | undefined> {
    const tenant = await this.tenants.get(id);
    return tenant ? toView(tenant) : undefined;
  }

  /** The tenant whose FHIR base is exactly this `iss` (after normalisation), or undefined. */
  async findByFhirBase(iss: string): Promise<TenantView | undefined> {
    let fhirBase: string;
    try {
      fhirBase = normaliseBaseUrl(iss);
    } catch {
      return undefined;
    }
    const tenant = await this.tenants.findByFhirBase(fhirBase);
    return tenant ? toView(tenant) : undefined;
  }

  /** The origins that may frame the app for a tenant's sessions (besides ours); empty when none or no tenant. */
  async frameAncestors(tenantId: string): Promise<string[]> {
    return this.tenants.frameAncestors(tenantId);
  }

  async remove(id: string): Promise<boolean> {
    return this.tenants.remove(id);
  }

  /** Stores our UDAP registration for `purpose` (replacing whatever registration that purpose had). */
  async saveUdapRegistration(
    tenantId: string,
    purpose: RegistrationPurpose,
    registration: UdapTenantRegistration,
  ): Promise<TenantView> {
    if (!(await this.tenants.get(tenantId))) throw new DtrError('NOT_FOUND', `no tenant ${tenantId}`);
    await this.tenants.putRegistration(tenantId, {
      purpose,
      clientId: registration.clientId,
      authMethod: 'udap',
      clientSecretEnc: null,
      signingAlg: null,
      scopes: registration.scopes.join(' '),
      redirectUri: registration.redirectUri,
      udapSan: registration.sanUri,
      udapCommunity: registration.community,
      udapGranted: registration.granted,
    });
    return (await this.get(tenantId))!;
  }

  /** Forgets the registration of `purpose` (after its client was cancelled at the EHR). */
  async removeRegistration(tenantId: string, purpose: RegistrationPurpose): Promise<boolean> {
    return this.tenants.removeRegistration(tenantId, purpose);
  }

  /** The registration used for a purpose: `disclose` falls back to `supplement` for single-client tenants. */
  async credentialsFor(tenantId: string, purpose: RegistrationPurpose): Promise<RegistrationCredentials> {
    const tenant = await this.tenants.get(tenantId);
    if (!tenant) throw new DtrError('NOT_FOUND', `no tenant ${tenantId}`);
    const registration =
      tenant.registrations.find((r) => r.purpose === purpose) ??
      (tenant.singleClient ? tenant.registrations.find((r) => r.purpose === 'supplement') : undefined);
    if (!registration)
      throw new DtrError(
        'CONFIGURATION',
        `tenant ${tenantId} has no ${purpose} registration (none was stored, or its UDAP client was cancelled): register one with "dtr tenant put" or "dtr tenant register-udap"`,
      );
    return {
      tenantId,
      purpose: registration.purpose,
      clientId: registration.clientId,
      authMethod: registration.authMethod,
      ...(registration.clientSecretEnc
        ? { clientSecret: this.secrets.open(registration.clientSecretEnc, secretAad(tenantId, registration.purpose)) }
        : {}),
      ...(registration.signingAlg ? { signingAlg: registration.signingAlg } : {}),
      scopes: registration.scopes.split(' ').filter(Boolean),
      redirectUri: registration.redirectUri,
      ...(registration.udapSan ? { udapSan: registration.udapSan } : {}),
      ...(registration.udapCommunity ? { udapCommunity: registration.udapCommunity } : {}),
    };
  }
}

function toView(tenant: StoredTenant): TenantView {
  return {
    id: tenant.id,
    name: tenant.name,
    fhirBase: tenant.fhirBase,
    discloseMode: tenant.discloseMode,
    singleClient: tenant.singleClient,
    frameAncestors: tenant.frameAncestors,
    udapIdp: tenant.udapIdp,
    registrations: [...tenant.registrations]
      .sort((a, b) => a.purpose.localeCompare(b.purpose))
      .map((r) => ({
        purpose: r.purpose,
        clientId: r.clientId,
        authMethod: r.authMethod,
        hasSecret: r.clientSecretEnc !== null,
        signingAlg: r.signingAlg,
        scopes: r.scopes.split(' ').filter(Boolean),
        redirectUri: r.redirectUri,
        udapSan: r.udapSan,
        udapCommunity: r.udapCommunity,
        udapGranted: r.udapGranted,
      })),
  };
}
