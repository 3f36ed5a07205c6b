import { SystemClock } from '@dtr/kernel';
import { DEFAULT_OUTBOUND_LIMITS, type OutboundPolicy } from '@dtr/smart';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { deviceOrder, sandboxCoverage } from '../../../test/support/fixtures.js';
import { type PayerSandbox, payerFixture, startPayerSandbox } from '../../../test/support/payer-sandbox.js';
import { PackageCache } from './package/package-cache.js';
import { PackageRetrieval } from './package/package-retrieval.js';
import { PayerClient } from './payer-client.js';

const COVERAGE = sandboxCoverage('cov-1', 'p1');
const ORDER = deviceOrder('dr-1', 'p1');
const EXPANDABLE = 'http://example.org/dtr/ValueSet/oxygen-saturation-codes';
const PACKAGE = '/Questionnaire/$questionnaire-package';

const policyWith = (limits: Partial<typeof DEFAULT_OUTBOUND_LIMITS>): OutboundPolicy => ({
  allowInsecureLoopback: true,
  limits: { ...DEFAULT_OUTBOUND_LIMITS, ...limits },
});

/** What the payer answers is bounded and checked; what goes to it is the session patient's only (sandbox payer, real HTTP). */
describe('payer answers bounded, requests checked (sandbox payer with faults, real PostgreSQL)', () => {
  let sandbox: PayerSandbox;
  const clock = new SystemClock();

  beforeAll(async () => {
    sandbox = await startPayerSandbox(inject('adminDatabaseUrl'), [payerFixture('expand-check-package')]);
  });
  afterEach(() => sandbox.peer.faults.clear());
  afterAll(async () => {
    await sandbox?.close();
  });

  const client = async (policy: OutboundPolicy = policyWith({})) =>
    new PayerClient(await sandbox.register('ES384'), sandbox.tokens, policy, clock);

  it('refuses a package answer larger than the payer limit, streamed without a length', async () => {
    sandbox.peer.faults.set({ padBytes: 3 * 1024 * 1024, paths: [`/fhir${PACKAGE}`] });
    const payer = await client(policyWith({ payer: { maxBytes: 2 * 1024 * 1024, maxDepth: 100 } }));
    await expect(payer.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })).rejects.toMatchObject({
      code: 'UPSTREAM_ERROR',
      message: expect.stringContaining('more than the 2 MB accepted in one response'),
    });
    // Under the limit the same package is taken.
    sandbox.peer.faults.set({ padBytes: 1024, paths: [`/fhir${PACKAGE}`] });
    await expect(payer.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })).resolves.toMatchObject({
      shape: '2.2',
    });
  });

  it.each([
    [
      'a __proto__ key',
      '{"resourceType":"Bundle","type":"collection","entry":[],"__proto__":{"polluted":true}}',
      '__proto__',
    ],
    [
      'deep nesting',
      `{"resourceType":"Bundle","type":"collection","entry":[],"x":${'['.repeat(5000)}${']'.repeat(5000)}}`,
      'nesting',
    ],
  ])('refuses a package answer with %s', async (_what, rawBody, reason) => {
    sandbox.peer.faults.set({ rawBody, paths: [`/fhir${PACKAGE}`] });
    await expect(
      (await client()).questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] }),
    ).rejects.toMatchObject({ code: 'UPSTREAM_ERROR', message: expect.stringContaining(reason) });
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('refuses a package with more entries than accepted', async () => {
    const payer = await client(policyWith({ packageMaxResources: 2 }));
    await expect(payer.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })).rejects.toMatchObject({
      code: 'UPSTREAM_ERROR',
      message: expect.stringMatching(/has \d+ entries, more than the 2 accepted/),
    });
  });

  it('pages $expand within the limits and refuses an expansion with more codes than accepted', async () => {
    const paged = await (await client(policyWith({ expandMaxCodes: 5 }))).expandValueSet(EXPANDABLE);
    expect((paged['expansion'] as { contains: Array<{ code: string }> }).contains.map((c) => c.code)).toEqual([
      '2708-6',
      '59408-5',
    ]);
    const mark = sandbox.peer.log.mark();
    const atTheLimit = await (await client(policyWith({ expandMaxCodes: 2 }))).expandValueSet(EXPANDABLE);
    expect((atTheLimit['expansion'] as { contains: unknown[] }).contains).toHaveLength(2);
    expect(sandbox.peer.log.since(mark).filter((e) => e.path.endsWith('/ValueSet/$expand'))).toHaveLength(1);
    await expect((await client(policyWith({ expandMaxCodes: 1 }))).expandValueSet(EXPANDABLE)).rejects.toMatchObject({
      code: 'UPSTREAM_ERROR',
      message: expect.stringContaining('has 2 codes, more than the 1 accepted'),
    });
  });

  it('refuses an expansion that needs more $expand pages than accepted, after asking for no more than that', async () => {
    // 2500 codes: pages of 1000 (under the code cap), so three pages are needed.
    const url = 'http://example.org/dtr/ValueSet/large-paged-codes';
    const codes = Array.from({ length: 2500 }, (_, i) => ({ code: `C${i}` }));
    sandbox.payerServer.publish({
      resourceType: 'ValueSet',
      id: 'large-paged-codes',
      url,
      status: 'active',
      compose: { include: [{ system: 'http://example.org/codes', concept: codes }] },
    });
    const expands = (mark: number) =>
      sandbox.peer.log.since(mark).filter((e) => e.path.endsWith('/ValueSet/$expand')).length;

    let mark = sandbox.peer.log.mark();
    const whole = await (await client(policyWith({ expandMaxPages: 3 }))).expandValueSet(url);
    const contains = (whole['expansion'] as { contains: Array<{ code: string }> }).contains;
    expect(contains.map((c) => c.code)).toEqual(codes.map((c) => c.code));
    expect(expands(mark)).toBe(3);

    mark = sandbox.peer.log.mark();
    await expect((await client(policyWith({ expandMaxPages: 2 }))).expandValueSet(url)).rejects.toMatchObject({
      code: 'UPSTREAM_ERROR',
      message: `the expansion of ${url} needs more than the 2 $expand pages accepted`,
      details: { maxPages: 2 },
    });
    expect(expands(mark)).toBe(2);
  });

  it('refuses an order or a coverage of another patient before anything is sent to the payer', async () => {
    const payer = await client();
    const mark = sandbox.peer.log.mark();
    await expect(
      payer.questionnairePackage({ coverages: [COVERAGE], orders: [deviceOrder('dr-9', 'p2')], patient: 'p1' }),
    ).rejects.toMatchObject({ code: 'CONFLICT', message: expect.stringContaining("DeviceRequest's subject") });
    await expect(
      payer.questionnairePackage({ coverages: [sandboxCoverage('cov-9', 'p2')], orders: [ORDER], patient: 'p1' }),
    ).rejects.toMatchObject({ code: 'CONFLICT', message: expect.stringContaining("coverage's beneficiary") });
    expect(sandbox.peer.log.since(mark)).toEqual([]);
  });

  it('never shares the remembered questionnaire choice across tenants, patients or plans', async () => {
    const retrieval = new PackageRetrieval(new PackageCache(sandbox.dataSource));
    const payer = await client();
    const order = (id: string, patient: string) => deviceOrder(id, patient);
    const first = await retrieval.retrieve(payer, {
      coverages: [sandboxCoverage('cov-a', 'pa')],
      orders: [order('o-a1', 'pa')],
      selectionScope: 'tenant-1|Patient/pa',
    });
    expect(first.fromCache).toBe(false);
    // The same patient, coverage and order codes again: the remembered choice is used (changedsince, from cache).
    const again = await retrieval.retrieve(payer, {
      coverages: [sandboxCoverage('cov-a', 'pa')],
      orders: [order('o-a2', 'pa')],
      selectionScope: 'tenant-1|Patient/pa',
    });
    expect(again.fromCache).toBe(true);
    // Another tenant, another patient, another coverage with the same order codes: asked in full.
    for (const [scope, coverage] of [
      ['tenant-2|Patient/pa', sandboxCoverage('cov-a', 'pa')],
      ['tenant-1|Patient/pb', sandboxCoverage('cov-b', 'pb')],
      [
        'tenant-1|Patient/pa',
        { ...sandboxCoverage('cov-a', 'pa'), class: [{ type: { coding: [{ code: 'plan' }] }, value: 'gold' }] },
      ],
    ] as const) {
      const other = await retrieval.retrieve(payer, {
        coverages: [coverage],
        orders: [order('o-x', 'px')],
        selectionScope: scope,
      });
      expect(other.fromCache).toBe(false);
    }
  });
});
