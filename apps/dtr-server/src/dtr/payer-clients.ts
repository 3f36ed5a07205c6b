import { Inject, Injectable } from '@nestjs/common';
import { AuditLog } from '@dtr/audit';
import { Clock, DtrError } from '@dtr/kernel';
import { type Payer, PayerClient, PayerRegistry } from '@dtr/payer';
import { BackendServicesClient, type OutboundPolicy, type SessionRecord, SmartSessions } from '@dtr/smart';
import { APP_CONFIG, type AppConfig } from '../config/app.config.js';
import { OUTBOUND_POLICY } from '../smart/smart.module.js';

/**
 * The client for a session's calls to its payer. A payer registered with `tokenSource: launch` (a test harness that
 * is the EHR and the payer at once) gets the launch's `supplement` EHR token instead of our Backend Services one,
 * and only when, at the time of use: the payer's fhirBase has the origin of the session's EHR (the token never goes
 * to another host), and the profile allows it (production refuses it unless DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER=true).
 * Each use is audited.
 */
@Injectable()
export class PayerClients {
  constructor(
    private readonly payers: PayerRegistry,
    private readonly tokens: BackendServicesClient,
    private readonly smart: SmartSessions,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    @Inject(OUTBOUND_POLICY) private readonly policy: OutboundPolicy,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
  ) {}

  async forSession(payer: Payer, session: SessionRecord): Promise<PayerClient> {
    const tls = await this.payers.tlsCredentials(payer.id);
    const launchToken = payer.tokenSource === 'launch' ? this.launchToken(payer, session) : undefined;
    return new PayerClient(payer, this.tokens, this.policy, this.clock, {
      ...(tls ? { tls } : {}),
      ...(launchToken ? { launchToken } : {}),
    });
  }

  private launchToken(payer: Payer, session: SessionRecord): () => Promise<string> {
    if (!this.config.allowLaunchTokenForPayer)
      throw new DtrError(
        'FORBIDDEN',
        `payer ${payer.id} is registered to receive the launch token, which the production profile refuses unless DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER=true`,
      );
    if (new URL(payer.fhirBase).origin !== new URL(session.fhirBase).origin)
      throw new DtrError(
        'FORBIDDEN',
        `payer ${payer.id} is registered to receive the launch token, but its fhirBase is not on the origin of this session's EHR: the EHR's token is not sent to another host`,
      );
    return async () => {
      const token = await this.smart.token(session, 'supplement');
      if (token.fhirBase !== session.fhirBase) throw new DtrError('FORBIDDEN', 'token issued for another FHIR server');
      await this.audit.record({
        kind: 'payer-launch-token',
        action: 'E',
        outcome: '0',
        tenantId: session.tenantId,
        sessionIdHash: session.idHash,
        agents: [
          { type: 'client', who: 'supplement', requestor: true },
          { type: 'payer', who: payer.id, requestor: false },
        ],
        entities: [],
        detail: { tokenSource: 'launch', payerOrigin: new URL(payer.fhirBase).origin },
      });
      return token.accessToken;
    };
  }
}
