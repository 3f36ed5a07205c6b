import { FixedClock, SystemClock } from '@dtr/kernel';
import { BackendServicesClient } from '@dtr/smart';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { deviceOrder, sandboxCoverage } from '../../../test/support/fixtures.js';
import {
  LOOPBACK_POLICY as policy,
  type PayerSandbox,
  startPayerSandbox,
} from '../../../test/support/payer-sandbox.js';
import { resourcesOf } from './package/package-response.js';
import { PayerClient } from './payer-client.js';

const COVERAGE = sandboxCoverage('cov-1', 'p1', 'Organization/org-1');
const ORDER = deviceOrder('dr-1', 'p1');

/**
 * PayerClient against the sandbox payer over real HTTP: SMART Backend Services with our own keys (JWKS served by us),
 * $questionnaire-package in every version shape, $next-question, token caching, retries and timeouts.
 */
describe('PayerClient (sandbox payer, real HTTP)', () => {
  let sandbox: PayerSandbox;

  beforeAll(async () => {
    sandbox = await startPayerSandbox(inject('adminDatabaseUrl'));
  });

  afterAll(async () => {
    await sandbox?.close();
  });

  for (const [version, shape] of [
    ['2.2', '2.2'],
    ['2.1', '2.1'],
    ['2.0.1', '2.0.1'],
  ] as const) {
    it(`retrieves the package in the DTR ${version} shape with a Backend Services token (ES384 and RS384)`, async () => {
      sandbox.payerServer.setIgVersion(version);
      const payer = await sandbox.register(version === '2.1' ? 'RS384' : 'ES384', version);
      const client = new PayerClient(payer, sandbox.tokens, policy, new FixedClock(new Date()));
      const response = await client.questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] });
      expect(response.shape).toBe(shape);
      const types = resourcesOf(response).map((r) => r.resourceType);
      expect(types).toContain('Questionnaire');
      expect(types).toContain('Library');
    });
  }

  it('reuses the cached token across calls, and sends it only to the payer', async () => {
    const { payerServer, peer } = sandbox;
    payerServer.setIgVersion('2.2');
    const payer = await sandbox.register('ES384');
    const cached = new BackendServicesClient(sandbox.keys, policy, new SystemClock());
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
    const { peer } = sandbox;
    const payer = await sandbox.register('ES384');
    const client = new PayerClient(payer, sandbox.tokens, policy, new FixedClock(new Date()), {
      timeoutMs: 400,
      retries: 1,
    });
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
    it(`walks an adaptive questionnaire with $next-question in the ${version} input shape`, async () => {
      sandbox.payerServer.setIgVersion(version);
      const payer = await sandbox.register('ES384', version);
      const client = new PayerClient(payer, sandbox.tokens, policy, new FixedClock(new Date()));
      let qr: Record<string, unknown> = {
        resourceType: 'QuestionnaireResponse',
        status: 'in-progress',
        questionnaire: 'http://example.org/dtr/Questionnaire/sleep-therapy-adaptive|1.0.0',
        subject: { reference: 'Patient/p1' },
        item: [],
      };
      const mark = sandbox.peer.log.mark();
      for (let step = 0; step < 10 && qr['status'] !== 'completed'; step++) {
        const next = (await client.nextQuestion(qr as never)) as Record<string, unknown>;
        qr = next['status'] === 'completed' ? next : { ...next, item: answerAll(next) };
      }
      expect(qr['status']).toBe('completed');
      const calls = sandbox.peer.log.since(mark).filter((e) => e.path.endsWith('$next-question'));
      expect(calls.length).toBeGreaterThanOrEqual(3);
      expect(calls.every((e) => e.status === 200)).toBe(true);
    });
  }

  it('calls $next-question on the base the adaptive extension names when it is under the payer base, never elsewhere', async () => {
    sandbox.payerServer.setIgVersion('2.2');
    const payer = await sandbox.register('ES384', '2.2');
    const client = new PayerClient(payer, sandbox.tokens, policy, new FixedClock(new Date()));
    expect(client.nextQuestionBase(undefined)).toBe(payer.fhirBase);
    expect(client.nextQuestionBase(`${payer.fhirBase}/`)).toBe(payer.fhirBase);
    expect(client.nextQuestionBase(`${payer.fhirBase}/Questionnaire/$next-question`)).toBe(payer.fhirBase);
    expect(client.nextQuestionBase(`${payer.fhirBase}/adaptive`)).toBe(`${payer.fhirBase}/adaptive`);
    const mark = sandbox.peer.log.mark();
    const qr = {
      resourceType: 'QuestionnaireResponse',
      status: 'in-progress',
      questionnaire: 'http://example.org/dtr/Questionnaire/sleep-therapy-adaptive|1.0.0',
    };
    for (const elsewhere of ['https://payer.example.org/fhir', `${payer.fhirBase}-other`, 'http://127.0.0.1:1/fhir']) {
      await expect(client.nextQuestion(qr as never, elsewhere)).rejects.toMatchObject({ code: 'UPSTREAM_ERROR' });
    }
    expect(sandbox.peer.log.since(mark)).toEqual([]);
    // A payer that refuses the input (another version's shape here) is a clear error naming its answer.
    sandbox.payerServer.setIgVersion('2.1');
    await expect(client.nextQuestion(qr as never)).rejects.toMatchObject({
      code: 'UPSTREAM_ERROR',
      message: expect.stringContaining('400'),
    });
  });
});

/** The response's items plus an answer to each question of the contained Questionnaire not answered yet. */
function answerAll(next: Record<string, unknown>): unknown[] {
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
  return items;
}
