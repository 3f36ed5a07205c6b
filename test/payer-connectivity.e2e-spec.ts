import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FixedClock, SystemClock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { PayerClient, PayerRegistry, resourcesOf } from '@dtr/payer';
import { BackendServicesClient, SigningKeyStore } from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { KeyRingSecretBox } from '../apps/dtr-server/src/smart/key-ring-secret-box.js';
import { createPayerServer, type PayerServer, sandboxPackageDirs } from '../apps/sandbox/src/payer/index.js';
import { type PeerServer, startPeerServer } from '../apps/sandbox/src/shared/peer-server.js';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';

const COVERAGE = {
  resourceType: 'Coverage',
  id: 'cov-1',
  status: 'active',
  beneficiary: { reference: 'Patient/p1' },
  payor: [{ reference: 'Organization/org-1', identifier: { system: 'http://example.org/payer-id', value: 'SANDBOX-PAYER' } }],
};
const ORDER = {
  resourceType: 'DeviceRequest',
  id: 'dr-1',
  status: 'active',
  intent: 'order',
  subject: { reference: 'Patient/p1' },
  codeCodeableConcept: { coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: 'E0424' }] },
};

/**
 * Our payer connectivity against the sandbox payer over real HTTP: SMART Backend Services with our own keys (JWKS
 * served by us), $questionnaire-package in every version shape, token caching, retries and timeouts.
 */
describe('payer connectivity (sandbox payer)', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  let keys: SigningKeyStore;
  let jwksServer: Server;
  let peer: PeerServer;
  let payerServer: PayerServer;
  let registry: PayerRegistry;
  let tokens: BackendServicesClient;
  const policy = { allowInsecureLoopback: true };

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_payer');
    await migrate(db.url);
    dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    keys = new SigningKeyStore(dataSource, new KeyRingSecretBox(new Map([['k', randomBytes(32)]])), new SystemClock());
    await keys.ensureKeys();
    jwksServer = createServer((_req, res) => {
      void keys.publicJwks().then((jwks) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(jwks));
      });
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
    peer = await startPeerServer('payer', '127.0.0.1', 0);
    payerServer = await createPayerServer({
      peer,
      clients: [{ clientId: 'dtr-backend', auth: 'private_key_jwt', jwksUri, grantTypes: ['client_credentials'] }],
      packageDirs: await sandboxPackageDirs(),
    });
    registry = new PayerRegistry(dataSource, policy);
    tokens = new BackendServicesClient(keys, policy, new SystemClock());
  });

  afterAll(async () => {
    await payerServer?.close();
    await peer?.close();
    jwksServer?.close();
    await dataSource?.destroy();
    await db?.drop();
  });

  const register = (alg: 'RS384' | 'ES384', igVersion: '2.0.1' | '2.1' | '2.2' = '2.2') =>
    registry.upsert({
      id: 'sandbox-payer',
      name: 'Sandbox payer',
      fhirBase: payerServer.fhirBase,
      tokenEndpoint: payerServer.tokenEndpoint,
      clientId: 'dtr-backend',
      signingAlg: alg,
      scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
      igVersion,
      coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER'],
    });

  it('maps a Coverage to its registered payer by payor identifier', async () => {
    await register('ES384');
    expect((await registry.forCoverage(COVERAGE))?.id).toBe('sandbox-payer');
    expect(await registry.forCoverage({ ...COVERAGE, payor: [{ identifier: { value: 'SOMEONE-ELSE' } }] })).toBeUndefined();
  });

  for (const [version, shape] of [['2.2', '2.2'], ['2.1', '2.1'], ['2.0.1', '2.0.1']] as const) {
    it(`retrieves the package in the DTR ${version} shape with a Backend Services token (ES384 and RS384)`, async () => {
      payerServer.setIgVersion(version);
      const payer = await register(version === '2.1' ? 'RS384' : 'ES384', version);
      const client = new PayerClient(payer, tokens, policy, new FixedClock(new Date()));
      const response = await client.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] });
      expect(response.shape).toBe(shape);
      const types = resourcesOf(response).map((r) => r.resourceType);
      expect(types).toContain('Questionnaire');
      expect(types).toContain('Library');
    });
  }

  it('reuses the cached token across calls, and sends it only to the payer', async () => {
    payerServer.setIgVersion('2.2');
    const payer = await register('ES384');
    const cached = new BackendServicesClient(keys, policy, new SystemClock());
    const client = new PayerClient(payer, cached, policy, new FixedClock(new Date()));
    const mark = peer.log.mark();
    await Promise.all([1, 2, 3].map(() => client.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })));
    await client.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] });
    const entries = peer.log.since(mark);
    expect(entries.filter((e) => e.path.endsWith('/token'))).toHaveLength(1);
    const calls = entries.filter((e) => e.path.endsWith('$questionnaire-package'));
    expect(calls).toHaveLength(4);
    expect(calls.every((e) => e.tokenIssuedHere === true && e.clientId === 'dtr-backend')).toBe(true);
  });

  it('retries a 503 and succeeds; a hanging payer gives UPSTREAM_TIMEOUT, not a hang', async () => {
    const payer = await register('ES384');
    const client = new PayerClient(payer, tokens, policy, new FixedClock(new Date()), { timeoutMs: 400, retries: 1 });
    peer.faults.set({ failNext: 1, errorStatus: 503, paths: ['/fhir/'] });
    await expect(client.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })).resolves.toMatchObject({ shape: '2.2' });
    peer.faults.set({ hang: true, paths: ['/fhir/'] });
    const started = Date.now();
    await expect(client.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })).rejects.toMatchObject({ code: 'UPSTREAM_TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(5000);
    peer.faults.clear();
  });

  it('refuses to register a payer over plain http outside loopback, naming the field', async () => {
    await expect(
      new PayerRegistry(dataSource, { allowInsecureLoopback: false }).upsert({
        id: 'x',
        name: 'x',
        fhirBase: 'http://payer.example.org/fhir',
        tokenEndpoint: 'https://payer.example.org/token',
        clientId: 'c',
        signingAlg: 'RS384',
        scopes: ['system/Questionnaire.rs'],
      }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/^fhirBase: /) });
  });
});
