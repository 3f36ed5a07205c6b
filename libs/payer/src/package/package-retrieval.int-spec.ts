import { rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FixedClock, SystemClock } from '@dtr/kernel';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { corpusPath, haveCorpus, NEEDS_CORPUS } from '../../../../test/support/corpus.js';
import { deviceOrder, sandboxCoverage } from '../../../../test/support/fixtures.js';
import {
  LOOPBACK_POLICY as policy,
  type PayerSandbox,
  payerFixture,
  payerFixtureCopy,
  startPayerSandbox,
} from '../../../../test/support/payer-sandbox.js';
import { PayerClient } from '../payer-client.js';
import { PackageCache } from './package-cache.js';
import { PackageRetrieval } from './package-retrieval.js';

const COVERAGE = sandboxCoverage('cov-1', 'p1', 'Organization/org-1');
const ORDER = deviceOrder('dr-1', 'p1');
// The value sets the expand-check fixture's library uses without carrying them (see test-fixtures/README.md).
const EXPANDABLE = 'http://example.org/dtr/ValueSet/oxygen-saturation-codes';
const UNKNOWN = 'http://example.org/dtr/ValueSet/not-known-anywhere';
// The negative example package of the corpus (others' data, read in place, never copied into the repository).
const CORPUS_HOME_O2 = corpusPath('packages', 'HomeO2-IG-Example');

/**
 * Package retrieval from the sandbox payer over real HTTP, with packages that go wrong in the ways payers' do: a
 * missing library (pointing at a live server nobody may call), value sets to expand at the payer, CQL without ELM, and
 * the corpus's negative example.
 */
describe('PackageRetrieval (sandbox payer, real PostgreSQL)', () => {
  let sandbox: PayerSandbox;
  let broken: string;
  // A server the broken package points at: nothing may ever call it.
  let strangerHits = 0;
  const stranger = createServer((_req, res) => {
    strangerHits++;
    res.end('{}');
  });
  const strangerPort = () => (stranger.address() as AddressInfo).port;

  beforeAll(async () => {
    await new Promise<void>((resolve) => stranger.listen(0, '127.0.0.1', resolve));
    broken = payerFixtureCopy('broken-package', { STRANGER: `http://127.0.0.1:${strangerPort()}` });
    sandbox = await startPayerSandbox(inject('adminDatabaseUrl'), [
      broken,
      payerFixture('expand-check-package'),
      payerFixture('cql-only-package'),
      ...(haveCorpus ? [CORPUS_HOME_O2, payerFixture('corpus-home-o2-rules')] : []),
    ]);
  });

  afterAll(async () => {
    await sandbox?.close();
    if (broken) rmSync(broken, { recursive: true, force: true });
    stranger.close();
  });

  it('names the problems of a broken package and reports them to the payer without patient data', async () => {
    const { payerServer } = sandbox;
    const payer = await sandbox.register('ES384');
    const client = new PayerClient(payer, sandbox.tokens, policy, new FixedClock(new Date()));
    const retrieval = new PackageRetrieval(new PackageCache(sandbox.dataSource));
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
    const { payerServer, peer } = sandbox;
    payerServer.setIgVersion('2.2');
    const payer = await sandbox.register('ES384');
    const client = new PayerClient(payer, sandbox.tokens, policy, new SystemClock());
    const mark = peer.log.mark();
    const order = { ...ORDER, id: 'dr-expand', codeCodeableConcept: { coding: [{ code: 'E9997' }] } };
    const result = await new PackageRetrieval(new PackageCache(sandbox.dataSource)).retrieve(client, {
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
    const second = await new PackageRetrieval(new PackageCache(sandbox.dataSource)).retrieve(client, {
      coverages: [COVERAGE],
      orders: [{ ...order, id: 'dr-expand-2' }],
    });
    expect(second.pkg.valueSetByUrl(EXPANDABLE)?.['expansion']).toBeDefined();
    expect(peer.log.since(again).filter((e) => e.path.endsWith('/ValueSet/$expand'))).toHaveLength(1);
  });

  it('compiles a library the payer ships as CQL only, caches the compiled form, and flags it', async () => {
    sandbox.payerServer.setIgVersion('2.2');
    const payer = await sandbox.register('ES384');
    const client = new PayerClient(payer, sandbox.tokens, policy, new SystemClock());
    const order = { ...ORDER, id: 'dr-cql-only', codeCodeableConcept: { coding: [{ code: 'E9996' }] } };
    for (const attempt of ['first', 'cached']) {
      const result = await new PackageRetrieval(new PackageCache(sandbox.dataSource)).retrieve(client, {
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
      const { payerServer } = sandbox;
      payerServer.setIgVersion('2.2');
      const payer = await sandbox.register('ES384');
      const client = new PayerClient(payer, sandbox.tokens, policy, new SystemClock());
      const before = payerServer.loggedErrors().length;
      const order = {
        ...ORDER,
        id: 'dr-o2-corpus',
        codeCodeableConcept: {
          coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: 'E0431' }],
        },
      };
      const result = await new PackageRetrieval(new PackageCache(sandbox.dataSource)).retrieve(client, {
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

  it('never calls a URL a package names: the broken package points its library at a live loopback server', async () => {
    const payer = await sandbox.register('ES384');
    const client = new PayerClient(payer, sandbox.tokens, policy, new FixedClock(new Date()));
    const order = { ...ORDER, id: 'dr-broken-2', codeCodeableConcept: { coding: [{ code: 'E9999' }] } };
    const result = await new PackageRetrieval(new PackageCache(sandbox.dataSource)).retrieve(client, {
      coverages: [COVERAGE],
      orders: [order],
    });
    expect(result.issues.find((i) => i.code === 'missing-library')?.library).toContain(`127.0.0.1:${strangerPort()}`);
    expect(strangerHits).toBe(0);
  });
});
