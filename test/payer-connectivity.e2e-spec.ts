import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FixedClock, SystemClock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { PackageCache, PackageRetrieval, PayerClient, PayerRegistry, resourcesOf } from '@dtr/payer';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BackendServicesClient, SigningKeyStore } from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { KeyRingSecretBox } from '@dtr/smart';
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
  // A server the broken package points at: nothing may ever call it.
  let strangerHits = 0;
  const stranger = createServer((_req, res) => {
    strangerHits++;
    res.end('{}');
  });
  const strangerReady = new Promise<void>((resolve) => stranger.listen(0, '127.0.0.1', resolve));
  // Our own broken package: its questionnaire names a library that is not there.
  const broken = mkdtempSync(path.join(os.tmpdir(), 'dtr-broken-package-'));
  writeFileSync(
    path.join(broken, 'Questionnaire-broken.json'),
    JSON.stringify({
      resourceType: 'Questionnaire',
      id: 'broken',
      url: 'http://example.org/dtr/Questionnaire/broken',
      version: '1',
      status: 'active',
      extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/cqf-library', valueCanonical: 'STRANGER/Library/Missing|1' }],
      item: [
        {
          linkId: 'q1',
          type: 'string',
          text: 'Anything',
          extension: [
            {
              url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
              valueExpression: { language: 'text/cql', expression: '"Missing".Anything' },
            },
          ],
        },
      ],
    }),
  );
  writeFileSync(
    path.join(broken, 'rules.json'),
    JSON.stringify({ rules: [{ codes: [{ code: 'E9999' }], questionnaires: ['http://example.org/dtr/Questionnaire/broken|1'] }] }),
  );

  beforeAll(async () => {
    await strangerReady;
    const questionnaireFile = path.join(broken, 'Questionnaire-broken.json');
    writeFileSync(questionnaireFile, readFileSync(questionnaireFile, 'utf8').replace('STRANGER', `http://127.0.0.1:${(stranger.address() as AddressInfo).port}`));
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
      packageDirs: [...(await sandboxPackageDirs()), broken],
    });
    registry = new PayerRegistry(dataSource, policy);
    tokens = new BackendServicesClient(keys, policy, new SystemClock());
  });

  afterAll(async () => {
    await payerServer?.close();
    await peer?.close();
    jwksServer?.close();
    rmSync(broken, { recursive: true, force: true });
    stranger.close();
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

  it('caches the package: a second session asks with changedsince and reuses the cache', async () => {
    payerServer.setIgVersion('2.2');
    const payer = await register('ES384');
    const client = new PayerClient(payer, tokens, policy, new FixedClock(new Date()));
    const retrieval = new PackageRetrieval(new PackageCache(dataSource));
    const first = await retrieval.retrieve(client, { coverages: [COVERAGE], orders: [ORDER] });
    expect(first.fromCache).toBe(false);
    expect(first.questionnaires.map((q) => q['url'])).toEqual(['http://example.org/dtr/Questionnaire/home-oxygen']);
    expect(first.issues.filter((i) => i.severity === 'error')).toEqual([]);

    const mark = peer.log.mark();
    const second = await retrieval.retrieve(client, {
      coverages: [COVERAGE],
      orders: [ORDER],
      questionnaires: ['http://example.org/dtr/Questionnaire/home-oxygen|1.0.0'],
    });
    expect(second.fromCache).toBe(true);
    expect(second.questionnaires).toHaveLength(1);
    expect(second.pkg.libraries.length).toBeGreaterThan(0);
    const call = peer.log.since(mark).find((e) => e.path.endsWith('$questionnaire-package'));
    expect(call).toBeDefined();
  });

  it('names the problems of a broken package and reports them to the payer without patient data', async () => {
    const payer = await register('ES384');
    const client = new PayerClient(payer, tokens, policy, new FixedClock(new Date()));
    const retrieval = new PackageRetrieval(new PackageCache(dataSource));
    const before = payerServer.loggedErrors().length;
    const order = { ...ORDER, id: 'dr-broken', codeCodeableConcept: { coding: [{ code: 'E9999' }] } };
    const result = await retrieval.retrieve(client, { coverages: [COVERAGE], orders: [order] });
    expect(result.issues.map((i) => i.code)).toEqual(expect.arrayContaining(['missing-library']));
    expect(result.reported).toBe(true);
    const reports = payerServer.loggedErrors().slice(before);
    expect(reports).toHaveLength(1);
    const text = JSON.stringify(reports[0]);
    expect(text).toContain('missing-library');
    expect(text).toContain('http://example.org/dtr/Questionnaire/broken|1');
    expect(text).not.toContain('Patient/p1');
    expect(text).not.toContain('cov-1');
  });

  for (const version of ['2.2', '2.1', '2.0.1'] as const) {
    it(`walks an adaptive questionnaire with $next-question in the ${version} input shape`, async () => {
      const payer = await register('ES384', version);
      const client = new PayerClient(payer, tokens, policy, new FixedClock(new Date()));
      let qr: Record<string, unknown> = {
        resourceType: 'QuestionnaireResponse',
        status: 'in-progress',
        questionnaire: 'http://example.org/dtr/Questionnaire/sleep-therapy-adaptive|1.0.0',
        subject: { reference: 'Patient/p1' },
        item: [],
      };
      const mark = peer.log.mark();
      for (let step = 0; step < 10 && qr['status'] !== 'completed'; step++) {
        const next = (await client.nextQuestion(qr as never)) as Record<string, unknown>;
        const questionnaire = (next['contained'] as Array<{ resourceType: string; item: Array<{ linkId: string; type: string }> }>).find((r) => r.resourceType === 'Questionnaire')!;
        const answered = new Set(((next['item'] as Array<{ linkId: string }>) ?? []).map((i) => i.linkId));
        const items = [...((next['item'] as unknown[]) ?? [])];
        for (const q of questionnaire.item.filter((i) => !answered.has(i.linkId))) {
          items.push({ linkId: q.linkId, answer: [q.type === 'boolean' ? { valueBoolean: true } : q.type === 'integer' ? { valueInteger: 5 } : { valueString: 'yes' }] });
        }
        qr = next['status'] === 'completed' ? next : { ...next, item: items };
      }
      expect(qr['status']).toBe('completed');
      const calls = peer.log.since(mark).filter((e) => e.path.endsWith('$next-question'));
      expect(calls.length).toBeGreaterThanOrEqual(3);
      expect(calls.every((e) => e.status === 200)).toBe(true);
    });
  }

  it('never calls a URL a package names: the broken package points its library at a live loopback server', async () => {
    const payer = await register('ES384');
    const client = new PayerClient(payer, tokens, policy, new FixedClock(new Date()));
    const order = { ...ORDER, id: 'dr-broken-2', codeCodeableConcept: { coding: [{ code: 'E9999' }] } };
    const result = await new PackageRetrieval(new PackageCache(dataSource)).retrieve(client, { coverages: [COVERAGE], orders: [order] });
    expect(result.issues.find((i) => i.code === 'missing-library')?.library).toContain(`127.0.0.1:${(stranger.address() as AddressInfo).port}`);
    expect(strangerHits).toBe(0);
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
