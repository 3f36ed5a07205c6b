import { SystemClock } from '@dtr/kernel';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { deviceOrder, sandboxCoverage } from '../../../../test/support/fixtures.js';
import {
  LOOPBACK_POLICY as policy,
  type PayerSandbox,
  startPayerSandbox,
} from '../../../../test/support/payer-sandbox.js';
import { PayerClient } from '../payer-client.js';
import { PackageCache } from './package-cache.js';
import { PackageRetrieval } from './package-retrieval.js';

const COVERAGE = sandboxCoverage('cov-1', 'p1', 'Organization/org-1');
const ORDER = deviceOrder('dr-1', 'p1');

/**
 * The package cache on real PostgreSQL with the sandbox payer over real HTTP: `changedsince` in every DTR shape, a
 * revision at the payer refreshing it, one package object reused while the rows are unchanged, across instances.
 */
describe('PackageCache (real PostgreSQL, sandbox payer)', () => {
  let sandbox: PayerSandbox;

  beforeAll(async () => {
    sandbox = await startPayerSandbox(inject('adminDatabaseUrl'));
  });

  afterAll(async () => {
    await sandbox?.close();
  });

  /** Each test starts from an empty cache for the payer. */
  const emptyCache = async (payerId: string) => {
    await sandbox.dataSource.query(`DELETE FROM package_resource WHERE payer_id = $1`, [payerId]);
    await sandbox.dataSource.query(`DELETE FROM package_selection WHERE payer_id = $1`, [payerId]);
  };

  for (const version of ['2.2', '2.1', '2.0.1'] as const) {
    it(`caches the package in the DTR ${version} shape: a second session asks with changedsince and reuses the cache; a change at the payer refreshes it`, async () => {
      const { payerServer } = sandbox;
      payerServer.setIgVersion(version);
      const payer = await sandbox.register('ES384', version);
      await emptyCache(payer.id);
      const client = new PayerClient(payer, sandbox.tokens, policy, new SystemClock());
      const cache = new PackageCache(sandbox.dataSource);
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
      for (const r of requests.slice(1)) {
        expect(Date.parse(r.changedsince!)).not.toBeNaN();
        // The version's input profile types it `instant`; the sandbox payer refuses any other element.
        expect(r.changedsinceType).toBe('valueInstant');
      }
      expect(requests[1]!.resourcesReturned).toBe(0);
      expect(requests[2]!.questionnairesReturned).toBe(1);
      expect(requests[3]!.resourcesReturned).toBe(0);
    });
  }

  it('reuses one package object while the cached content is unchanged, and never serves it stale after another instance stored a revision', async () => {
    const { payerServer, dataSource } = sandbox;
    payerServer.setIgVersion('2.2');
    const payer = await sandbox.register('ES384');
    await emptyCache(payer.id);
    const client = new PayerClient(payer, sandbox.tokens, policy, new SystemClock());
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
});
