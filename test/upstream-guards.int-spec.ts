import { randomBytes } from 'node:crypto';
import { SystemClock } from '@dtr/kernel';
import { DEFAULT_OUTBOUND_LIMITS, type OutboundPolicy, type SessionRecord, SmartDiscovery } from '@dtr/smart';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createEhrFhirServer } from '../apps/sandbox/src/ehr/fhir/index.js';
import { type PeerServer, startPeerServer } from '../apps/sandbox/src/shared/peer-server.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { type PrepareUseCaseSetup, setUpPrepareUseCase } from './support/prepare-use-case.js';
import type { PrepareQuestionnairesUseCase } from '../apps/dtr-server/src/dtr/prepare-questionnaires.usecase.js';

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
  let setup: PrepareUseCaseSetup;
  let ehrPeer: PeerServer;
  let ehrBase: string;
  let payerPeer: PeerServer;
  let useCase: PrepareQuestionnairesUseCase;
  const policy: OutboundPolicy = {
    allowInsecureLoopback: true,
    limits: { ...DEFAULT_OUTBOUND_LIMITS, ehr: { maxBytes: 2 * 1024 * 1024, maxDepth: 100 } },
  };
  const clock = new SystemClock();

  beforeAll(async () => {
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
    setup = await setUpPrepareUseCase(inject('adminDatabaseUrl'), 'dtr_upstream', { ehrBase, policy, clock });
    ({ payerPeer, useCase } = setup);
  });

  afterEach(() => ehrPeer.faults.clear());
  afterAll(async () => {
    await setup?.close();
    await ehrPeer?.close();
  });

  const session = (order = 'DeviceRequest/o1', coverage = 'Coverage/cov-1'): Promise<SessionRecord> =>
    setup.session({
      accessToken: EHR_TOKEN,
      fhirContext: [
        { reference: order, type: 'DeviceRequest' },
        { reference: coverage, type: 'Coverage' },
      ],
    });

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
