import type { AuditLog } from '@dtr/audit';
import { DtrError } from '@dtr/kernel';
import type { RegistrationPurpose } from '../tenants/tenant.types.js';
import type { TenantRegistry, TenantView } from '../tenants/tenant-registry.service.js';
import {
  contactsOf,
  parseUdapRegisterInput,
  type UdapRegisterInput,
  type UdapStatementDefaults,
} from './udap-registration-input.js';
import type { UdapRegistrar } from './udap-registrar.js';

/** What a registration did, as the operator sees it. */
export interface UdapRegistrationResult {
  status: 'registered' | 'modified' | 'cancelled';
  clientId: string;
  /** The client id stored before (a modification keeps it; a server that issued a new one is reported). */
  previousClientId: string | null;
  grantType: 'authorization_code' | 'client_credentials';
  tokenEndpoint: string;
}

export interface TenantUdapDefaults extends UdapStatementDefaults {
  /** Our OAuth redirect URI (`{DTR_PUBLIC_URL}/callback`), when a registration has none stored. */
  redirectUri?: string;
}

/**
 * `dtr tenant register-udap`: registers one of a tenant's identities (`supplement`, used at launch, or `disclose`)
 * with the EHR's UDAP server. The launch registration and a user-delegated disclose one use authorization_code with
 * our redirect URI and logo; a `system` disclose registration uses client_credentials. Running it again modifies the
 * registration (the EHR keeps the client id); `cancel` cancels the client at the EHR and forgets it here. Each
 * attempt is audited.
 * @see https://hl7.org/fhir/us/udap-security/registration.html
 */
export class TenantUdapRegistration {
  constructor(
    private readonly tenants: TenantRegistry,
    private readonly registrar: UdapRegistrar,
    private readonly audit: AuditLog,
    private readonly defaults: TenantUdapDefaults,
  ) {}

  async register(
    tenantId: string,
    purpose: RegistrationPurpose,
    rawInput: unknown,
    operator: string,
  ): Promise<UdapRegistrationResult & { tenant: TenantView | undefined }> {
    const input = parseUdapRegisterInput(rawInput);
    const tenant = await this.tenants.get(tenantId);
    if (!tenant) throw new DtrError('NOT_FOUND', `no tenant ${tenantId}`);
    if (purpose === 'disclose' && tenant.singleClient)
      throw new DtrError('INVALID_INPUT', `tenant ${tenantId} has a single client: register its supplement identity`);
    const stored = tenant.registrations.find((r) => r.purpose === purpose);
    const grantType =
      purpose === 'disclose' && tenant.discloseMode === 'system' ? 'client_credentials' : 'authorization_code';
    const sanUri = input.san ?? stored?.udapSan ?? undefined;
    const community = input.community ?? (input.cancel ? stored?.udapCommunity : undefined) ?? undefined;
    try {
      if (input.cancel) {
        if (stored?.authMethod !== 'udap' || !sanUri)
          throw new DtrError('NOT_FOUND', `tenant ${tenantId} has no UDAP ${purpose} registration to cancel`);
      }
      const scopes = input.scopes ?? stored?.scopes;
      if (!scopes)
        throw new DtrError(
          'INVALID_INPUT',
          `scopes: tenant ${tenantId} has no ${purpose} registration to take them from; give --scope`,
          {
            expression: ['scopes'],
          },
        );
      const redirectUri = stored?.redirectUri ?? this.defaults.redirectUri;
      if (grantType === 'authorization_code' && !redirectUri)
        throw new DtrError('CONFIGURATION', 'our redirect URI is unknown: set DTR_PUBLIC_URL');
      const logoUri = input.logoUri ?? this.defaults.logoUri;
      if (grantType === 'authorization_code' && !input.cancel && !logoUri)
        throw new DtrError(
          'INVALID_INPUT',
          'logoUri: an authorization_code registration needs a logo (--logo-uri https://… or DTR_UDAP_LOGO_URI)',
          { expression: ['logoUri'] },
        );
      const { server, registration } = await this.registrar.register({
        baseUrl: tenant.fhirBase,
        ...(community ? { community } : {}),
        sanUri: sanUri!,
        grantType: input.cancel ? 'cancel' : grantType,
        clientName: input.clientName ?? `${this.defaults.clientName} (${purpose})`,
        contacts: contactsOf(input, this.defaults),
        ...(grantType === 'authorization_code' && redirectUri ? { redirectUri } : {}),
        ...(grantType === 'authorization_code' && logoUri ? { logoUri } : {}),
        scope: scopes.join(' '),
        // The launch registration may later send an `idp` (the tenant's udapIdp): it needs the `udap` scope.
        tieredOAuth: purpose === 'supplement',
      });
      const previousClientId = stored?.authMethod === 'udap' ? stored.clientId : null;
      let view: TenantView | undefined;
      let status: UdapRegistrationResult['status'];
      if (input.cancel) {
        await this.tenants.removeRegistration(tenantId, purpose);
        view = await this.tenants.get(tenantId);
        status = 'cancelled';
      } else {
        view = await this.tenants.saveUdapRegistration(tenantId, purpose, {
          clientId: registration.clientId,
          sanUri: sanUri!,
          community: community ?? null,
          granted: registration.granted,
          scopes,
          redirectUri: redirectUri ?? stored?.redirectUri ?? '',
        });
        status = previousClientId ? 'modified' : 'registered';
      }
      const result = {
        status,
        clientId: registration.clientId,
        previousClientId,
        grantType,
        tokenEndpoint: server.tokenEndpoint,
      } as const;
      await this.record(tenantId, purpose, operator, sanUri!, result);
      return { ...result, tenant: view };
    } catch (error) {
      await this.recordFailure(tenantId, purpose, operator, sanUri, input, error);
      throw error;
    }
  }

  private async record(
    tenantId: string,
    purpose: RegistrationPurpose,
    operator: string,
    sanUri: string,
    result: UdapRegistrationResult,
  ): Promise<void> {
    await this.audit.record({
      kind: 'udap-registration',
      action: result.status === 'cancelled' ? 'D' : result.status === 'modified' ? 'U' : 'C',
      outcome: '0',
      tenantId,
      agents: [
        { type: 'operator', who: operator, requestor: true },
        { type: 'client', who: result.clientId, requestor: false },
      ],
      entities: [{ what: sanUri, detail: { purpose, grantType: result.grantType } }],
      detail: {
        status: result.status,
        ...(result.previousClientId && result.previousClientId !== result.clientId
          ? { previousClientId: result.previousClientId }
          : {}),
      },
    });
  }

  private async recordFailure(
    tenantId: string,
    purpose: RegistrationPurpose,
    operator: string,
    sanUri: string | undefined,
    input: UdapRegisterInput,
    error: unknown,
  ): Promise<void> {
    await this.audit.record({
      kind: 'udap-registration',
      action: input.cancel ? 'D' : 'C',
      outcome: '8',
      tenantId,
      agents: [{ type: 'operator', who: operator, requestor: true }],
      entities: sanUri ? [{ what: sanUri, detail: { purpose } }] : [],
      detail: failureDetail(error),
    });
  }
}

/** Our code for a failure and its UDAP reason, never a peer's words. */
export function failureDetail(error: unknown): Record<string, string> {
  if (!(error instanceof DtrError)) return { error: 'INTERNAL' };
  const udap = error.details['udap'];
  return { error: error.code, ...(typeof udap === 'string' ? { udap } : {}) };
}
