import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { Agent as HttpsAgent, createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { DtrError, FixedClock, SystemClock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { agentFetch, PackageCache, PackageRetrieval, PayerClient, PayerRegistry, resourcesOf } from '@dtr/payer';
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
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { corpusPath, haveCorpus, NEEDS_CORPUS } from './support/corpus.js';

const COVERAGE = sandboxCoverage('cov-1', 'p1', 'Organization/org-1');
const ORDER = deviceOrder('dr-1', 'p1');

/**
 * Our payer connectivity against the sandbox payer over real HTTP: SMART Backend Services with our own keys (JWKS
 * served by us), $questionnaire-package in every version shape, token caching, retries and timeouts.
 */
// The negative example package of the corpus (others' data, read in place, never copied into the repository).
const CORPUS_HOME_O2 = corpusPath('packages', 'HomeO2-IG-Example');

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
      extension: [
        { url: 'http://hl7.org/fhir/StructureDefinition/cqf-library', valueCanonical: 'STRANGER/Library/Missing|1' },
      ],
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
    JSON.stringify({
      rules: [{ codes: [{ code: 'E9999' }], questionnaires: ['http://example.org/dtr/Questionnaire/broken|1'] }],
    }),
  );

  // A package whose library uses two value sets it does not carry: the payer can expand one, not the other.
  const expandDir = mkdtempSync(path.join(os.tmpdir(), 'dtr-expand-package-'));
  const EXPANDABLE = 'http://example.org/dtr/ValueSet/oxygen-saturation-codes';
  const UNKNOWN = 'http://example.org/dtr/ValueSet/not-known-anywhere';
  const elm = {
    library: {
      identifier: { id: 'ExpandCheck', version: '1.0.0' },
      schemaIdentifier: { id: 'urn:hl7-org:elm', version: 'r1' },
      usings: { def: [{ localIdentifier: 'FHIR', uri: 'http://hl7.org/fhir', version: '4.0.1' }] },
      valueSets: {
        def: [
          { name: 'Oxygen saturation', id: EXPANDABLE, accessLevel: 'Public' },
          { name: 'Unknown', id: UNKNOWN, accessLevel: 'Public' },
        ],
      },
      statements: { def: [] },
    },
  };
  writeFileSync(
    path.join(expandDir, 'Library-ExpandCheck.json'),
    JSON.stringify({
      resourceType: 'Library',
      id: 'ExpandCheck',
      url: 'http://example.org/dtr/Library/ExpandCheck',
      version: '1.0.0',
      status: 'active',
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/library-type', code: 'logic-library' }] },
      content: [{ contentType: 'application/elm+json', data: Buffer.from(JSON.stringify(elm)).toString('base64') }],
    }),
  );
  writeFileSync(
    path.join(expandDir, 'Questionnaire-expand-check.json'),
    JSON.stringify({
      resourceType: 'Questionnaire',
      id: 'expand-check',
      url: 'http://example.org/dtr/Questionnaire/expand-check',
      version: '1',
      status: 'active',
      extension: [
        {
          url: 'http://hl7.org/fhir/StructureDefinition/cqf-library',
          valueCanonical: 'http://example.org/dtr/Library/ExpandCheck|1.0.0',
        },
      ],
      item: [{ linkId: 'q1', type: 'string', text: 'Anything' }],
    }),
  );
  // Known to the payer (so $expand answers), but not part of the package it sends.
  writeFileSync(
    path.join(expandDir, 'ValueSet-oxygen-saturation-codes.json'),
    JSON.stringify({
      resourceType: 'ValueSet',
      id: 'oxygen-saturation-codes',
      url: EXPANDABLE,
      status: 'active',
      compose: { include: [{ system: 'http://loinc.org', concept: [{ code: '2708-6' }, { code: '59408-5' }] }] },
    }),
  );
  writeFileSync(
    path.join(expandDir, 'rules.json'),
    JSON.stringify({
      rules: [{ codes: [{ code: 'E9997' }], questionnaires: ['http://example.org/dtr/Questionnaire/expand-check|1'] }],
    }),
  );

  // A payer that ships its library as CQL only: our fixture library without its ELM, under its own canonical.
  const cqlOnlyDir = mkdtempSync(path.join(os.tmpdir(), 'dtr-cql-only-package-'));
  {
    const fixture = path.resolve(import.meta.dirname, '../apps/sandbox/fixtures/packages/home-oxygen-example');
    const library = JSON.parse(readFileSync(path.join(fixture, 'Library-HomeOxygenExample.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const questionnaire = JSON.parse(
      readFileSync(path.join(fixture, 'Questionnaire-home-oxygen.json'), 'utf8'),
    ) as Record<string, unknown>;
    const url = 'http://example.org/dtr/Library/HomeOxygenExampleCqlOnly';
    writeFileSync(
      path.join(cqlOnlyDir, 'Library.json'),
      JSON.stringify({
        ...library,
        id: 'cql-only',
        url,
        content: (library['content'] as Array<{ contentType: string }>).filter((c) => c.contentType === 'text/cql'),
      }),
    );
    const text = JSON.stringify({
      ...questionnaire,
      id: 'cql-only',
      url: 'http://example.org/dtr/Questionnaire/cql-only',
    }).replaceAll('http://example.org/dtr/Library/HomeOxygenExample|', `${url}|`);
    writeFileSync(path.join(cqlOnlyDir, 'Questionnaire.json'), text);
    writeFileSync(
      path.join(cqlOnlyDir, 'rules.json'),
      JSON.stringify({
        rules: [
          {
            codes: [{ code: 'E9996' }],
            questionnaires: [`http://example.org/dtr/Questionnaire/cql-only|${String(questionnaire['version'])}`],
          },
        ],
      }),
    );
  }

  // Rules that make the sandbox payer answer the corpus package's two questionnaires for an oxygen order.
  const corpusRules = mkdtempSync(path.join(os.tmpdir(), 'dtr-corpus-rules-'));
  writeFileSync(
    path.join(corpusRules, 'rules.json'),
    JSON.stringify({
      rules: [
        {
          codes: [{ code: 'E0431' }],
          questionnaires: [
            'Questionnaire/HomeOxygenTherapyLab',
            'http://hl7.org/fhir/us/davinci-dtr/Questionnaire/home-o2-std-questionnaire|0.1.0',
          ],
        },
      ],
    }),
  );

  beforeAll(async () => {
    await strangerReady;
    const questionnaireFile = path.join(broken, 'Questionnaire-broken.json');
    writeFileSync(
      questionnaireFile,
      readFileSync(questionnaireFile, 'utf8').replace(
        'STRANGER',
        `http://127.0.0.1:${(stranger.address() as AddressInfo).port}`,
      ),
    );
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
      packageDirs: [
        ...(await sandboxPackageDirs()),
        broken,
        expandDir,
        cqlOnlyDir,
        ...(haveCorpus ? [CORPUS_HOME_O2, corpusRules] : []),
      ],
    });
    registry = new PayerRegistry(dataSource, policy);
    tokens = new BackendServicesClient(keys, policy, new SystemClock());
  });

  afterAll(async () => {
    await payerServer?.close();
    await peer?.close();
    jwksServer?.close();
    rmSync(broken, { recursive: true, force: true });
    rmSync(corpusRules, { recursive: true, force: true });
    rmSync(expandDir, { recursive: true, force: true });
    rmSync(cqlOnlyDir, { recursive: true, force: true });
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
    expect(
      await registry.forCoverage({ ...COVERAGE, payor: [{ identifier: { value: 'SOMEONE-ELSE' } }] }),
    ).toBeUndefined();
  });

  for (const [version, shape] of [
    ['2.2', '2.2'],
    ['2.1', '2.1'],
    ['2.0.1', '2.0.1'],
  ] as const) {
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
    try {
      peer.faults.set({ failNext: 1, errorStatus: 503, paths: ['/fhir/'] });
      await expect(client.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })).resolves.toMatchObject({
        shape: '2.2',
      });
      peer.faults.set({ hang: true, paths: ['/fhir/'] });
      const started = Date.now();
      await expect(client.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })).rejects.toMatchObject({
        code: 'UPSTREAM_TIMEOUT',
      });
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      peer.faults.clear();
    }
  });

  for (const version of ['2.2', '2.1', '2.0.1'] as const) {
    it(`caches the package in the DTR ${version} shape: a second session asks with changedsince and reuses the cache; a change at the payer refreshes it`, async () => {
      payerServer.setIgVersion(version);
      const payer = await register('ES384', version);
      // Each shape starts from an empty cache.
      await dataSource.query(`DELETE FROM package_resource WHERE payer_id = $1`, [payer.id]);
      await dataSource.query(`DELETE FROM package_selection WHERE payer_id = $1`, [payer.id]);
      const client = new PayerClient(payer, tokens, policy, new SystemClock());
      const cache = new PackageCache(dataSource);
      const before = payerServer.packageRequests().length;
      const session = (orderId: string) =>
        new PackageRetrieval(cache).retrieve(client, { coverages: [COVERAGE], orders: [{ ...ORDER, id: orderId }] });

      // First session: the whole package, validated and cached.
      const first = await session('dr-first');
      expect(first.fromCache).toBe(false);
      expect(first.questionnaires.map((q) => q['url'])).toEqual(['http://example.org/dtr/Questionnaire/home-oxygen']);
      expect(first.issues.filter((i) => i.severity === 'error')).toEqual([]);
      expect(first.pkg.libraries.map((l) => l.elm?.library.identifier.id)).toContain('HomeOxygenExample');

      // Second session, another order with the same code: changedsince, nothing resent, the cached content used.
      const second = await session('dr-second');
      expect(second.fromCache).toBe(true);
      expect(second.questionnaires).toEqual(first.questionnaires);
      expect(second.pkg.libraries.map((l) => l.elm?.library.identifier.id)).toContain('HomeOxygenExample');
      expect(second.issues.filter((i) => i.severity === 'error')).toEqual([]);

      // The payer revises the questionnaire: the next session gets the revision, and the one after reuses it.
      const current = payerServer.content('Questionnaire', 'http://example.org/dtr/Questionnaire/home-oxygen')!;
      const revisedTitle = `Home oxygen therapy (revised for ${version} at ${Date.now()})`;
      await new Promise((resolve) => setTimeout(resolve, 5));
      payerServer.publish({ ...current, title: revisedTitle });
      const third = await session('dr-third');
      expect(third.fromCache).toBe(false);
      expect(third.questionnaires.map((q) => q['title'])).toEqual([revisedTitle]);
      const fourth = await session('dr-fourth');
      expect(fourth.fromCache).toBe(true);
      expect(fourth.questionnaires.map((q) => q['title'])).toEqual([revisedTitle]);

      // What the payer saw, from its own log.
      const requests = payerServer.packageRequests().slice(before);
      expect(requests.map((r) => r.version)).toEqual([version, version, version, version]);
      expect(requests[0]!.changedsince).toBeUndefined();
      expect(requests[0]!.questionnairesReturned).toBe(1);
      for (const r of requests.slice(1)) expect(Date.parse(r.changedsince!)).not.toBeNaN();
      expect(requests[1]!.resourcesReturned).toBe(0);
      expect(requests[2]!.questionnairesReturned).toBe(1);
      expect(requests[3]!.resourcesReturned).toBe(0);
    });
  }

  it('reuses one package object while the cached content is unchanged, and never serves it stale after another instance stored a revision', async () => {
    payerServer.setIgVersion('2.2');
    const payer = await register('ES384');
    await dataSource.query(`DELETE FROM package_resource WHERE payer_id = $1`, [payer.id]);
    await dataSource.query(`DELETE FROM package_selection WHERE payer_id = $1`, [payer.id]);
    const client = new PayerClient(payer, tokens, policy, new SystemClock());
    // Two server instances: each has its own cache object over the same database.
    const here = new PackageRetrieval(new PackageCache(dataSource));
    const elsewhere = new PackageRetrieval(new PackageCache(dataSource));
    const session = (retrieval: PackageRetrieval, orderId: string) =>
      retrieval.retrieve(client, { coverages: [COVERAGE], orders: [{ ...ORDER, id: orderId }] });
    const url = 'http://example.org/dtr/Questionnaire/home-oxygen';

    const first = await session(here, 'dr-memo-1');
    const second = await session(here, 'dr-memo-2');
    expect(second.fromCache).toBe(true);
    // The same package (its ELM read once), and the session's questionnaire is the package's own object.
    expect(second.pkg).toBe(first.pkg);
    expect(second.questionnaires[0]).toBe(first.pkg.questionnaires.find((q) => q['url'] === url));

    // The other instance retrieves a revision the payer published; this one then asks with changedsince, gets
    // nothing new, and must still use the revision.
    const revisedTitle = `Home oxygen therapy (revised at ${Date.now()})`;
    await new Promise((resolve) => setTimeout(resolve, 5));
    payerServer.publish({ ...payerServer.content('Questionnaire', url)!, title: revisedTitle });
    const third = await session(elsewhere, 'dr-memo-3');
    expect(third.questionnaires.map((q) => q['title'])).toEqual([revisedTitle]);
    const fourth = await session(here, 'dr-memo-4');
    expect(fourth.fromCache).toBe(true);
    expect(fourth.pkg).not.toBe(first.pkg);
    expect(fourth.questionnaires.map((q) => q['title'])).toEqual([revisedTitle]);
    expect(fourth.pkg.questionnaires.filter((q) => q['url'] === url).map((q) => q['title'])).toEqual([revisedTitle]);
    expect(fourth.issues.filter((i) => i.severity === 'error')).toEqual([]);
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

  it('expands at the payer the value sets a package uses but does not carry, caches them, and names the ones it cannot expand', async () => {
    payerServer.setIgVersion('2.2');
    const payer = await register('ES384');
    const client = new PayerClient(payer, tokens, policy, new SystemClock());
    const mark = peer.log.mark();
    const order = { ...ORDER, id: 'dr-expand', codeCodeableConcept: { coding: [{ code: 'E9997' }] } };
    const result = await new PackageRetrieval(new PackageCache(dataSource)).retrieve(client, {
      coverages: [COVERAGE],
      orders: [order],
    });
    const expanded = result.pkg.valueSetByUrl(EXPANDABLE);
    expect(
      (expanded?.['expansion'] as { contains?: Array<{ code?: string }> } | undefined)?.contains?.map((c) => c.code),
    ).toEqual(['2708-6', '59408-5']);
    expect(result.issues.filter((i) => i.valueSet === EXPANDABLE)).toEqual([]);
    expect(result.issues).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ code: 'valueset-expand-failed', valueSet: UNKNOWN, severity: 'warning' }),
      ]),
    );
    // Only the registered payer was asked, once per value set.
    const expands = peer.log.since(mark).filter((e) => e.path.endsWith('/ValueSet/$expand'));
    expect(expands).toHaveLength(2);
    expect(expands.every((e) => e.tokenIssuedHere === true)).toBe(true);
    // Cached: the next session finds the expansion without asking again.
    const again = peer.log.mark();
    const second = await new PackageRetrieval(new PackageCache(dataSource)).retrieve(client, {
      coverages: [COVERAGE],
      orders: [{ ...order, id: 'dr-expand-2' }],
    });
    expect(second.pkg.valueSetByUrl(EXPANDABLE)?.['expansion']).toBeDefined();
    expect(peer.log.since(again).filter((e) => e.path.endsWith('/ValueSet/$expand'))).toHaveLength(1);
  });

  it('compiles a library the payer ships as CQL only, caches the compiled form, and flags it', async () => {
    payerServer.setIgVersion('2.2');
    const payer = await register('ES384');
    const client = new PayerClient(payer, tokens, policy, new SystemClock());
    const order = { ...ORDER, id: 'dr-cql-only', codeCodeableConcept: { coding: [{ code: 'E9996' }] } };
    for (const attempt of ['first', 'cached']) {
      const result = await new PackageRetrieval(new PackageCache(dataSource)).retrieve(client, {
        coverages: [COVERAGE],
        orders: [{ ...order, id: `dr-cql-only-${attempt}` }],
      });
      const library = result.pkg.libraryByCanonical('http://example.org/dtr/Library/HomeOxygenExampleCqlOnly');
      expect(library?.elm?.library.identifier.id, attempt).toBe('HomeOxygenExample');
      expect(result.issues, attempt).toEqual(
        expect.arrayContaining([expect.objectContaining({ severity: 'information', code: 'compiled-from-cql' })]),
      );
      expect(
        result.issues.filter((i) => i.severity === 'error'),
        attempt,
      ).toEqual([]);
    }
  });

  it.skipIf(!haveCorpus)(
    `the corpus negative package HomeO2-IG-Example: named issues, reported to the payer without PHI, no crash ${NEEDS_CORPUS}`,
    async () => {
      payerServer.setIgVersion('2.2');
      const payer = await register('ES384');
      const client = new PayerClient(payer, tokens, policy, new SystemClock());
      const before = payerServer.loggedErrors().length;
      const order = {
        ...ORDER,
        id: 'dr-o2-corpus',
        codeCodeableConcept: {
          coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: 'E0431' }],
        },
      };
      const result = await new PackageRetrieval(new PackageCache(dataSource)).retrieve(client, {
        coverages: [COVERAGE],
        orders: [order],
      });
      expect(result.questionnaires.map((q) => q.id).sort()).toEqual([
        'HomeOxygenTherapyLab',
        'home-o2-std-questionnaire',
      ]);
      const lab = result.issues.filter((i) => i.questionnaire === 'Questionnaire/HomeOxygenTherapyLab');
      expect(lab.map((i) => i.code)).toEqual(expect.arrayContaining(['missing-cqf-library']));
      expect(lab.filter((i) => /BasicPatientInfoPrepopulation/.test(i.message)).length).toBeGreaterThan(0);
      expect(result.reported).toBe(true);
      const reports = payerServer.loggedErrors().slice(before);
      expect(reports.length).toBeGreaterThan(0);
      const text = JSON.stringify(reports);
      expect(text).toContain('Questionnaire/HomeOxygenTherapyLab');
      expect(text).toContain('missing-cqf-library');
      for (const phi of ['Patient/p1', 'cov-1', 'dr-o2-corpus']) expect(text).not.toContain(phi);
    },
  );

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
        const questionnaire = (
          next['contained'] as Array<{ resourceType: string; item: Array<{ linkId: string; type: string }> }>
        ).find((r) => r.resourceType === 'Questionnaire')!;
        const answered = new Set(((next['item'] as Array<{ linkId: string }>) ?? []).map((i) => i.linkId));
        const items = [...((next['item'] as unknown[]) ?? [])];
        for (const q of questionnaire.item.filter((i) => !answered.has(i.linkId))) {
          items.push({
            linkId: q.linkId,
            answer: [
              q.type === 'boolean'
                ? { valueBoolean: true }
                : q.type === 'integer'
                  ? { valueInteger: 5 }
                  : { valueString: 'yes' },
            ],
          });
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
    const result = await new PackageRetrieval(new PackageCache(dataSource)).retrieve(client, {
      coverages: [COVERAGE],
      orders: [order],
    });
    expect(result.issues.find((i) => i.code === 'missing-library')?.library).toContain(
      `127.0.0.1:${(stranger.address() as AddressInfo).port}`,
    );
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

  describe('mutual TLS with a payer that requires a client certificate', () => {
    let pki: string;
    let mtlsServer: HttpsServer;
    let base: string;
    const seen: Array<{ path: string; subject: string | undefined }> = [];
    const handshakeErrors: string[] = [];
    const file = (name: string) => readFileSync(path.join(pki, name), 'utf8');
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: pki, stdio: 'pipe' });
    // A CA of the payer's, its server certificate for 127.0.0.1, our client certificate from that CA, and one from a CA it does not trust.
    const makePki = () => {
      pki = mkdtempSync(path.join(os.tmpdir(), 'dtr-mtls-'));
      for (const ca of ['ca', 'rogue-ca'])
        openssl(
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-days',
          '2',
          '-subj',
          `/CN=${ca}`,
          '-keyout',
          `${ca}.key`,
          '-out',
          `${ca}.crt`,
        );
      const issue = (name: string, ca: string, subject: string, ext?: string) => {
        openssl(
          'req',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-subj',
          subject,
          '-keyout',
          `${name}.key`,
          '-out',
          `${name}.csr`,
        );
        if (ext) writeFileSync(path.join(pki, `${name}.ext`), ext);
        openssl(
          'x509',
          '-req',
          '-in',
          `${name}.csr`,
          '-CA',
          `${ca}.crt`,
          '-CAkey',
          `${ca}.key`,
          '-CAcreateserial',
          '-days',
          '2',
          '-out',
          `${name}.crt`,
          ...(ext ? ['-extfile', `${name}.ext`] : []),
        );
      };
      issue('server', 'ca', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1\n');
      issue('client', 'ca', '/CN=dtr-backend-mtls');
      issue('rogue-client', 'rogue-ca', '/CN=dtr-backend-rogue');
    };

    beforeAll(async () => {
      makePki();
      mtlsServer = createHttpsServer(
        {
          key: file('server.key'),
          cert: file('server.crt'),
          ca: file('ca.crt'),
          requestCert: true,
          rejectUnauthorized: true,
        },
        (req, res) => {
          const cn = (req.socket as TLSSocket).getPeerCertificate()?.subject?.CN;
          const subject = Array.isArray(cn) ? cn.join(',') : cn;
          seen.push({ path: req.url ?? '', subject });
          req.resume();
          req.on('end', () => {
            if (req.url === '/token') {
              res.setHeader('content-type', 'application/json');
              res.end(
                JSON.stringify({
                  access_token: `mtls-${randomBytes(8).toString('hex')}`,
                  token_type: 'bearer',
                  expires_in: 300,
                }),
              );
              return;
            }
            res.setHeader('content-type', 'application/fhir+json');
            res.end(
              JSON.stringify({
                resourceType: 'Parameters',
                parameter: [
                  { name: 'packagebundle', resource: { resourceType: 'Bundle', type: 'collection', entry: [] } },
                ],
              }),
            );
          });
        },
      );
      // Why the server refused a handshake (the client's certificate, not ours).
      mtlsServer.on('tlsClientError', (error: Error) => handshakeErrors.push(error.message));
      await new Promise<void>((resolve) => mtlsServer.listen(0, '127.0.0.1', resolve));
      base = `https://127.0.0.1:${(mtlsServer.address() as AddressInfo).port}`;
    });

    afterAll(() => {
      mtlsServer?.close();
      if (pki) rmSync(pki, { recursive: true, force: true });
    });

    const registryWithBox = () =>
      new PayerRegistry(dataSource, policy, new KeyRingSecretBox(new Map([['k1', randomBytes(32)]])));
    const input = (certificate?: Record<string, string> | null) => ({
      id: 'mtls-payer',
      name: 'Payer requiring mutual TLS',
      fhirBase: `${base}/fhir`,
      tokenEndpoint: `${base}/token`,
      clientId: 'dtr-backend',
      signingAlg: 'ES384',
      scopes: ['system/Questionnaire.rs'],
      coverageIdentifiers: ['http://example.org/payer-id|MTLS'],
      ...(certificate !== undefined ? { clientCertificate: certificate } : {}),
    });

    it('stores the client certificate with its key sealed and never returned; refuses a key of another certificate, unreadable PEM and plain http', async () => {
      const registry = registryWithBox();
      const payer = await registry.upsert(
        input({ certificate: file('client.crt'), privateKey: file('client.key'), serverCa: file('ca.crt') }),
      );
      expect(payer.clientCertificate?.subject).toContain('dtr-backend-mtls');
      expect(payer.clientCertificate?.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
      const everything = JSON.stringify([payer, await registry.list()]);
      expect(everything).not.toContain('PRIVATE KEY');
      const [row] = (await dataSource.query(
        `SELECT client_certificate_key_sealed FROM payer WHERE id = 'mtls-payer'`,
      )) as Array<{ client_certificate_key_sealed: string }>;
      expect(row!.client_certificate_key_sealed).not.toContain('PRIVATE KEY');
      // Re-registering without the field keeps the certificate.
      expect((await registry.upsert(input())).clientCertificate?.subject).toContain('dtr-backend-mtls');

      await expect(
        registry.upsert(input({ certificate: file('client.crt'), privateKey: file('rogue-client.key') })),
      ).rejects.toThrow(/clientCertificate.privateKey: does not belong to the certificate/);
      await expect(
        registry.upsert(
          input({
            certificate: '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----',
            privateKey: file('client.key'),
          }),
        ),
      ).rejects.toThrow(/clientCertificate.certificate: is not a readable PEM certificate/);
      await expect(
        registry.upsert({
          ...input({ certificate: file('client.crt'), privateKey: file('client.key') }),
          id: 'mtls-http',
          fhirBase: 'http://127.0.0.1:9/fhir',
          tokenEndpoint: 'http://127.0.0.1:9/token',
        }),
      ).rejects.toThrow(/mutual TLS needs https/);
      await expect(
        new PayerRegistry(dataSource, policy).upsert(
          input({ certificate: file('client.crt'), privateKey: file('client.key') }),
        ),
      ).rejects.toThrow(/DTR_ENCRYPTION_KEYS/);
    });

    it('presents the certificate to the token endpoint and the FHIR endpoint; without it, or with one the payer does not trust, a clear error', async () => {
      const registry = registryWithBox();
      const payer = await registry.upsert(
        input({ certificate: file('client.crt'), privateKey: file('client.key'), serverCa: file('ca.crt') }),
      );
      const tls = await registry.tlsCredentials(payer.id);
      expect(tls?.privateKey).toContain('PRIVATE KEY');
      const mark = seen.length;
      const answer = await new PayerClient(
        payer,
        new BackendServicesClient(keys, policy, new SystemClock()),
        policy,
        new SystemClock(),
        { tls: tls! },
      ).questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] });
      expect(answer.bundles).toHaveLength(1);
      expect(seen.slice(mark).map((e) => `${e.path} ${e.subject}`)).toEqual([
        '/token dtr-backend-mtls',
        '/fhir/Questionnaire/$questionnaire-package dtr-backend-mtls',
      ]);

      // A certificate from a CA the payer does not trust: the payer ends the handshake.
      const rogue = {
        certificate: file('rogue-client.crt'),
        privateKey: file('rogue-client.key'),
        serverCa: file('ca.crt'),
      };
      const before = handshakeErrors.length;
      const refused = await new PayerClient(
        payer,
        new BackendServicesClient(keys, policy, new SystemClock()),
        policy,
        new SystemClock(),
        { tls: rogue, retries: 0 },
      )
        .questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(DtrError);
      expect(handshakeErrors.length).toBeGreaterThan(before);
      // Trusting the payer's server but presenting no certificate: refused for the missing client certificate.
      const noCertificate = agentFetch(new HttpsAgent({ ca: file('ca.crt') }));
      const afterRogue = handshakeErrors.length;
      const without = await new PayerClient(
        payer,
        new BackendServicesClient(keys, policy, new SystemClock(), noCertificate),
        policy,
        new SystemClock(),
        {
          fetch: noCertificate,
          retries: 0,
        },
      )
        .questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })
        .catch((e: unknown) => e);
      expect(without).toBeInstanceOf(DtrError);
      expect(handshakeErrors.slice(afterRogue).join(' ')).toMatch(/peer did not return a certificate/);
      expect((without as Error).message).toMatch(/certificate required/);
      // Neither reached the payer's handler.
      expect(seen.length).toBe(mark + 2);
    });
  });
});
