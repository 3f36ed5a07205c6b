import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AuditLog } from '@dtr/audit';
import { SystemClock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { PackageCache, PayerRegistry } from '@dtr/payer';
import {
  BackendServicesClient,
  DEFAULT_OUTBOUND_LIMITS,
  KeyRingSecretBox,
  type OutboundPolicy,
  type SessionRecord,
  SessionStore,
  SigningKeyStore,
  SmartDiscovery,
  SmartSessions,
  TenantRegistry,
} from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createEhrFhirServer } from '../apps/sandbox/src/ehr/fhir/index.js';
import { createPayerServer, type PayerServer, sandboxPackageDirs } from '../apps/sandbox/src/payer/index.js';
import { type PeerServer, startPeerServer } from '../apps/sandbox/src/shared/peer-server.js';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { PayerClients } from '../apps/dtr-server/src/dtr/payer-clients.js';
import type { AppConfig } from '../apps/dtr-server/src/config/app.config.js';
import { PrepareQuestionnairesUseCase } from '../apps/dtr-server/src/dtr/prepare-questionnaires.usecase.js';
import { PrefillPool } from '../apps/dtr-server/src/dtr/prefill-pool/prefill-pool.js';
import { FormSessionRepository } from '../apps/dtr-server/src/dtr/forms/form-session.repository.js';
import { FormSessionsService } from '../apps/dtr-server/src/dtr/forms/form-sessions.service.js';
import { FormRulesPool } from '../apps/dtr-server/src/dtr/forms/form-rules-pool.js';

const EHR_TOKEN = `ehr-${randomBytes(12).toString('hex')}`;
const RESOURCES = [
  { resourceType: 'Patient', id: 'p1', birthDate: '1948-07-09', name: [{ family: 'Okafor', given: ['Grace'] }] },
  { resourceType: 'Patient', id: 'p2', birthDate: '1960-01-01', name: [{ family: 'Other', given: ['Paul'] }] },
  sandboxCoverage('cov-1', 'p1'),
  sandboxCoverage('cov-2', 'p2'),
  deviceOrder('o1', 'p1'),
  deviceOrder('o2', 'p2'),
  {
    resourceType: 'Condition',
    id: 'c1',
    subject: { reference: 'Patient/p1' },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '389087006' }] },
  },
];
const CONDITIONS = '/fhir/Condition';

/**
 * What the EHR answers a prefill is bounded and checked, and only the session patient's data is used: the sandbox
 * EHR's FHIR server (in-process, real HTTP, faults switched per test) and the sandbox payer.
 */
describe('EHR answers bounded and checked, patient compartment enforced (sandbox EHR and payer, real HTTP)', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  let jwks: Server;
  let ehrPeer: PeerServer;
  let ehrBase: string;
  let payerPeer: PeerServer;
  let payer: PayerServer;
  let store: SessionStore;
  let useCase: PrepareQuestionnairesUseCase;
  const policy: OutboundPolicy = {
    allowInsecureLoopback: true,
    limits: { ...DEFAULT_OUTBOUND_LIMITS, ehr: { maxBytes: 2 * 1024 * 1024, maxDepth: 100 } },
  };
  const clock = new SystemClock();

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_upstream');
    await migrate(db.url);
    dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    const box = new KeyRingSecretBox(new Map([['k', randomBytes(32)]]));
    const keys = new SigningKeyStore(dataSource, box, clock);
    await keys.ensureKeys();
    jwks = createServer((_req, res) => void keys.publicJwks().then((body) => res.end(JSON.stringify(body))));
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    payerPeer = await startPeerServer('payer', '127.0.0.1', 0);
    payer = await createPayerServer({
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
    ehrPeer = await startPeerServer('ehr', '127.0.0.1', 0);
    const ehr = await createEhrFhirServer({
      peer: ehrPeer,
      resources: RESOURCES as never,
      introspect: async (token) =>
        token === EHR_TOKEN
          ? { clientId: 'c', scopes: ['user/*.rs'], expiresAt: Math.floor(Date.now() / 1000) + 600 }
          : undefined,
    });
    ehrBase = ehr.baseUrl;
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
    store = new SessionStore(dataSource, box, clock);
    const smart = new SmartSessions(store, tenants, new SmartDiscovery(policy, clock), clock, { policy, keys });
    const audit = new AuditLog(dataSource, Buffer.alloc(32, 1), clock);
    const tokens = new BackendServicesClient(keys, policy, clock);
    useCase = new PrepareQuestionnairesUseCase(
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
  });

  afterEach(() => ehrPeer.faults.clear());
  afterAll(async () => {
    await payer?.close();
    await payerPeer?.close();
    await ehrPeer?.close();
    jwks?.close();
    await dataSource?.destroy();
    await db?.drop();
  });

  async function session(order = 'DeviceRequest/o1', coverage = 'Coverage/cov-1'): Promise<SessionRecord> {
    const { record } = await store.create(
      {
        tenantId: 'ehr',
        fhirBase: ehrBase,
        patient: 'p1',
        encounter: null,
        fhirUser: null,
        context: {
          patient: 'p1',
          fhirContext: [
            { reference: order, type: 'DeviceRequest' },
            { reference: coverage, type: 'Coverage' },
          ],
        },
        ttlMs: 600_000,
      },
      {
        purpose: 'supplement',
        tokenEndpoint: 'http://127.0.0.1/token',
        clientId: 'c',
        accessToken: EHR_TOKEN,
        scope: 'launch patient/*.rs',
        expiresAt: new Date(Date.now() + 600_000),
      },
    );
    return record;
  }

  const issuesOf = (result: Awaited<ReturnType<PrepareQuestionnairesUseCase['run']>>) =>
    result.payers.flatMap((p) => p.questionnaires).flatMap((q) => q.issues);

  it('drops a resource of another patient that the EHR returns in a search, with an issue naming only its type', async () => {
    ehrPeer.faults.set({ foreignPatientInSearch: true, paths: [CONDITIONS] });
    const result = await useCase.run(await session());
    const issue = issuesOf(result).find((i) => i.code === 'not-patient-compartment');
    expect(issue?.message).toBe(
      'the EHR returned a Condition resource that does not belong to this patient; it was left out',
    );
    // The search did return it: the EHR log shows the Condition search answered.
    expect(ehrPeer.log.all().some((e) => e.path.startsWith(CONDITIONS))).toBe(true);
    expect(JSON.stringify(result)).not.toContain('foreign-c1');
    expect(JSON.stringify(result)).not.toContain('someone-else');
  });

  it('refuses an order of another patient before anything goes to the payer', async () => {
    const mark = payerPeer.log.mark();
    await expect(useCase.run(await session('DeviceRequest/o2'))).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: expect.stringContaining('is not for the patient in context'),
    });
    expect(payerPeer.log.since(mark)).toEqual([]);
    // A coverage of another patient named by the launch is left out: only the patient's own goes to the payer.
    const result = await useCase.run(await session('DeviceRequest/o1', 'Coverage/cov-2'));
    expect(result.payers.flatMap((p) => p.coverages)).not.toContain('Coverage/cov-2');
    expect(JSON.stringify(payerPeer.log.since(mark))).not.toContain('cov-2');
  });

  it('fails a search whose answer is larger than the EHR limit with a clear issue, and goes on', async () => {
    ehrPeer.faults.set({ padBytes: 3 * 1024 * 1024, paths: [CONDITIONS] });
    const result = await useCase.run(await session());
    const issue = issuesOf(result).find((i) => i.code === 'search-failed');
    expect(issue?.message).toContain('more than the 2 MB accepted in one response');
  });

  it.each([
    ['a __proto__ key', '{"resourceType":"Bundle","type":"searchset","__proto__":{"polluted":true}}', '__proto__'],
    [
      'deep nesting',
      `{"resourceType":"Bundle","type":"searchset","x":${'['.repeat(5000)}${']'.repeat(5000)}}`,
      'nesting',
    ],
  ])('fails a search answered with %s with a clear issue', async (_what, rawBody, reason) => {
    ehrPeer.faults.set({ rawBody, paths: [CONDITIONS] });
    const result = await useCase.run(await session());
    const issue = issuesOf(result).find((i) => i.code === 'search-failed');
    expect(issue?.message).toContain(reason);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('never follows a next link with an encoded ..: the search fails with an issue, nothing else is asked', async () => {
    const escape = `${ehrBase}/%2e%2e/%2e%2e/_sandbox/store/Patient`;
    ehrPeer.faults.set({ nextLink: escape, paths: [CONDITIONS] });
    const mark = ehrPeer.log.mark();
    const result = await useCase.run(await session());
    expect(issuesOf(result).find((i) => i.code === 'search-failed')?.message).toContain('leaves the FHIR base');
    expect(ehrPeer.log.since(mark).filter((e) => e.path.startsWith(CONDITIONS))).toHaveLength(1);
    expect(ehrPeer.log.since(mark).some((e) => !e.path.startsWith('/fhir/'))).toBe(false);
  });

  it.each([
    ['a __proto__ key', 'refused'],
    ['more bytes than the discovery limit', 'accepted in one response'],
  ])('refuses a smart-configuration with %s', async (what, reason) => {
    const valid = {
      authorization_endpoint: `${ehrPeer.origin}/auth/authorize`,
      token_endpoint: `${ehrPeer.origin}/auth/token`,
      capabilities: ['launch-ehr'],
    };
    ehrPeer.faults.set(
      what.startsWith('a __proto__')
        ? {
            rawBody: JSON.stringify(valid).replace('{', '{"__proto__":{"polluted":true},'),
            paths: ['/fhir/.well-known'],
          }
        : { rawBody: JSON.stringify({ ...valid, padding: 'x'.repeat(1024 * 1024) }), paths: ['/fhir/.well-known'] },
    );
    await expect(new SmartDiscovery(policy, clock).get(ehrBase)).rejects.toMatchObject({
      code: 'UPSTREAM_ERROR',
      message: expect.stringContaining(reason),
    });
    ehrPeer.faults.set({ rawBody: JSON.stringify(valid), paths: ['/fhir/.well-known'] });
    await expect(new SmartDiscovery(policy, clock).get(ehrBase)).resolves.toMatchObject(valid);
  });
});
