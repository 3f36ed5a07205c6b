import type { AuditLog } from '@dtr/audit';
import { DtrError } from '@dtr/kernel';
import {
  contactsOf,
  failureDetail,
  parseUdapRegisterInput,
  type UdapRegistrar,
  type UdapRegistrationResult,
  type UdapStatementDefaults,
} from '@dtr/smart';
import type { Payer, PayerRegistry } from './payer-registry.service.js';

/**
 * `dtr payer register-udap`: registers us with a payer's UDAP server for client_credentials (B2B), its scopes the
 * payer's Backend Services scopes. The answered client id and the token endpoint of the payer's signed metadata are
 * stored with auth method `udap`. Running it again modifies the registration; `cancel` cancels the client and token
 * requests to that payer are then refused here. Each attempt is audited.
 * @see https://hl7.org/fhir/us/udap-security/b2b.html
 */
export class PayerUdapRegistration {
  constructor(
    private readonly payers: PayerRegistry,
    private readonly registrar: UdapRegistrar,
    private readonly audit: AuditLog,
    private readonly defaults: UdapStatementDefaults,
  ) {}

  async register(
    payerId: string,
    rawInput: unknown,
    operator: string,
  ): Promise<UdapRegistrationResult & { payer: Payer }> {
    const input = parseUdapRegisterInput(rawInput);
    const payer = await this.payers.get(payerId);
    if (!payer) throw new DtrError('NOT_FOUND', `no payer ${payerId}`);
    const stored = payer.authMethod === 'udap' && payer.udap && !payer.udap.cancelledAt ? payer.udap : undefined;
    const sanUri = input.san ?? stored?.san;
    const community = input.community ?? (input.cancel ? stored?.community : undefined) ?? undefined;
    try {
      if (input.cancel && (!stored || !sanUri))
        throw new DtrError('NOT_FOUND', `payer ${payerId} has no UDAP registration to cancel`);
      const scopes = input.scopes ?? payer.scopes;
      const { server, registration } = await this.registrar.register({
        baseUrl: payer.fhirBase,
        ...(community ? { community } : {}),
        sanUri: sanUri!,
        grantType: input.cancel ? 'cancel' : 'client_credentials',
        clientName: input.clientName ?? this.defaults.clientName,
        contacts: contactsOf(input, this.defaults),
        scope: scopes.join(' '),
      });
      const previousClientId = stored ? payer.clientId : null;
      const status: UdapRegistrationResult['status'] = input.cancel ? 'cancelled' : stored ? 'modified' : 'registered';
      const saved = await this.payers.saveUdapRegistration(
        payerId,
        input.cancel ? payer.clientId : registration.clientId,
        server.tokenEndpoint,
        {
          san: sanUri!,
          community: community ?? null,
          granted: input.cancel ? null : registration.granted,
          cancelledAt: input.cancel ? new Date() : null,
        },
      );
      const result = {
        status,
        clientId: registration.clientId,
        previousClientId,
        grantType: 'client_credentials',
        tokenEndpoint: server.tokenEndpoint,
      } as const;
      await this.audit.record({
        kind: 'udap-registration',
        action: status === 'cancelled' ? 'D' : status === 'modified' ? 'U' : 'C',
        outcome: '0',
        agents: [
          { type: 'operator', who: operator, requestor: true },
          { type: 'payer', who: payerId, requestor: false },
          { type: 'client', who: registration.clientId, requestor: false },
        ],
        entities: [{ what: sanUri!, detail: { grantType: 'client_credentials' } }],
        detail: {
          status,
          ...(previousClientId && previousClientId !== registration.clientId ? { previousClientId } : {}),
        },
      });
      return { ...result, payer: saved };
    } catch (error) {
      await this.audit.record({
        kind: 'udap-registration',
        action: input.cancel ? 'D' : 'C',
        outcome: '8',
        agents: [
          { type: 'operator', who: operator, requestor: true },
          { type: 'payer', who: payerId, requestor: false },
        ],
        entities: sanUri ? [{ what: sanUri }] : [],
        detail: failureDetail(error),
      });
      throw error;
    }
  }
}
