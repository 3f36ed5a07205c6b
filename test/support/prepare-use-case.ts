import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AuditLog } from '@dtr/audit';
import type { Clock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { PackageCache, PayerRegistry } from '@dtr/payer';
import {
  BackendServicesClient,
  KeyRingSecretBox,
  type OutboundPolicy,
  type SessionRecord,
  SessionStore,
  SigningKeyStore,
  SmartDiscovery,
  SmartSessions,
  TenantRegistry,
} from '@dtr/smart';
import { createPayerServer, type PayerServer, sandboxPackageDirs } from '../../apps/sandbox/src/payer/index.js';
import { type PeerServer, startPeerServer } from '../../apps/sandbox/src/shared/peer-server.js';
import type { AppConfig } from '../../apps/dtr-server/src/config/app.config.js';
import { FormRulesPool } from '../../apps/dtr-server/src/dtr/forms/form-rules-pool.js';
import { FormSessionRepository } from '../../apps/dtr-server/src/dtr/forms/form-session.repository.js';
import { FormSessionsService } from '../../apps/dtr-server/src/dtr/forms/form-sessions.service.js';
import { PayerClients } from '../../apps/dtr-server/src/dtr/payer-clients.js';
import { PrefillPool } from '../../apps/dtr-server/src/dtr/prefill-pool/prefill-pool.js';
import { PrepareQuestionnairesUseCase } from '../../apps/dtr-server/src/dtr/prepare-questionnaires.usecase.js';
import { createScratchDatabase } from './databases.js';

export interface PrepareUseCaseSetup {
  audit: AuditLog;
  /** The sandbox payer's peer: its request log and faults. */
  payerPeer: PeerServer;
  payer: PayerServer;
  useCase: PrepareQuestionnairesUseCase;
  /**
   * A launched session of patient `p1` at the tenant `ehr` (10 minutes), holding the supplement access token given,
   * with `fhirContext` as the EHR put it in the launch context.
   */
  session(launch: {
    accessToken: string;
    fhirContext: Array<{ reference: string; type: string }>;
    fhirUser?: string | null;
  }): Promise<SessionRecord>;
  close(): Promise<void>;
}

/**
 * `PrepareQuestionnairesUseCase` wired as the server wires it, on a migrated scratch database: the EHR at `ehrBase`
 * registered as tenant `ehr` (one client, `c`), the sandbox payer over real HTTP registered as `sandbox-payer` (it
 * trusts our signing keys through a JWKS served here), the prefill and form rules evaluated in this thread (the worker
 * pools run from dist/ and are tested in the e2e tier).
 */
export async function setUpPrepareUseCase(
  adminDatabaseUrl: string,
  prefix: string,
  { ehrBase, policy, clock }: { ehrBase: string; policy: OutboundPolicy; clock: Clock },
): Promise<PrepareUseCaseSetup> {
  const db = await createScratchDatabase(adminDatabaseUrl, prefix);
  await migrate(db.url);
  const dataSource = createDataSource({ url: db.url });
  await dataSource.initialize();
  const box = new KeyRingSecretBox(new Map([['k', randomBytes(32)]]));
  const keys = new SigningKeyStore(dataSource, box, clock);
  await keys.ensureKeys();
  const jwks: Server = createServer(
    (_req, res) => void keys.publicJwks().then((body) => res.end(JSON.stringify(body))),
  );
  await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
  const payerPeer = await startPeerServer('payer', '127.0.0.1', 0);
  const payer = await createPayerServer({
    peer: payerPeer,
    clients: [
      {
        clientId: 'dtr-backend',
        auth: 'private_key_jwt',
        jwksUri: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/`,
        grantTypes: ['client_credentials'],
      },
    ],
    packageDirs: await sandboxPackageDirs(),
  });
  const tenants = new TenantRegistry(dataSource, box, policy);
  await tenants.upsert({
    id: 'ehr',
    name: 'EHR',
    fhirBase: ehrBase,
    discloseMode: 'user-delegated',
    singleClient: true,
    supplement: {
      clientId: 'c',
      authMethod: 'client_secret_basic',
      clientSecret: 'secret-secret',
      scopes: ['launch', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
      redirectUri: 'http://127.0.0.1/callback',
    },
  });
  const payers = new PayerRegistry(dataSource, policy);
  await payers.upsert({
    id: 'sandbox-payer',
    name: 'Sandbox payer',
    fhirBase: payer.fhirBase,
    tokenEndpoint: payer.tokenEndpoint,
    clientId: 'dtr-backend',
    signingAlg: 'ES384',
    scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
    coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER'],
  });
  const store = new SessionStore(dataSource, box, clock);
  const smart = new SmartSessions(store, tenants, new SmartDiscovery(policy, clock), clock, { policy, keys });
  const audit = new AuditLog(dataSource, Buffer.alloc(32, 1), clock);
  const tokens = new BackendServicesClient(keys, policy, clock);
  const useCase = new PrepareQuestionnairesUseCase(
    audit,
    smart,
    payers,
    tokens,
    new PackageCache(dataSource),
    policy,
    clock,
    new PrefillPool({ size: 0 }),
    new FormSessionsService(
      new FormSessionRepository(dataSource, box, clock),
      smart,
      clock,
      new FormRulesPool({ size: 0 }),
    ),
    new PayerClients(payers, tokens, smart, audit, clock, policy, { allowLaunchTokenForPayer: false } as AppConfig),
    {},
  );
  return {
    audit,
    payerPeer,
    payer,
    useCase,
    async session({ accessToken, fhirContext, fhirUser = null }) {
      const { record } = await store.create(
        {
          tenantId: 'ehr',
          fhirBase: ehrBase,
          patient: 'p1',
          encounter: null,
          fhirUser,
          context: { patient: 'p1', fhirContext },
          ttlMs: 600_000,
        },
        {
          purpose: 'supplement',
          tokenEndpoint: 'http://127.0.0.1/token',
          clientId: 'c',
          accessToken,
          scope: 'launch patient/*.rs',
          expiresAt: new Date(Date.now() + 600_000),
        },
      );
      return record;
    },
    async close() {
      await payer.close();
      await payerPeer.close();
      jwks.close();
      await dataSource.destroy();
      await db.drop();
    },
  };
}
