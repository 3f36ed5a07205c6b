import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { type RunningDemo, startDemo } from './support/demo.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { launchSession, prepareQuestionnaires } from './support/launch.js';
import { repoRoot } from './support/processes.js';

/**
 * A payer's package is hostile input: the server stops its logic at the prefill deadline, keeps serving everyone
 * else, caps its queue, and prepares one session at a time. Our own hostile package (test/fixtures/hostile-package)
 * served by the sandbox payer; the built server with one prefill worker, over real HTTP.
 */
const DEADLINE_MS = 3000;
const PATIENT = 'pl-p1';
const BIRTH_DATE = '1951-06-07';
const ORDERS = { regex: 'E0901', expand: 'E0902', nested: 'E0903', fine: 'E0904' } as const;
const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resourceType: 'Patient', id: PATIENT, birthDate: BIRTH_DATE, name: [{ family: 'Quint', given: ['Ada'] }] },
    { resourceType: 'Practitioner', id: 'pl-pr', name: [{ family: 'Ruiz', given: ['Dana'] }] },
    sandboxCoverage('pl-cov', PATIENT),
    ...Object.entries(ORDERS).map(([name, code]) => deviceOrder(`pl-${name}`, PATIENT, code)),
  ].map((resource) => ({ resource })),
};

interface Outcome {
  resourceType: string;
  issue: Array<{ code: string; diagnostics?: string }>;
}

describe("bounds on a payer's logic, through the server", () => {
  let demo: RunningDemo;
  let url: string;

  beforeAll(async () => {
    demo = await startDemo(
      inject('adminDatabaseUrl'),
      'dtr_payer_limits',
      {
        SANDBOX_PACKAGE_DIRS: path.join(repoRoot, 'test/fixtures/hostile-package'),
        DTR_PREFILL_WORKERS: '1',
        DTR_PREFILL_DEADLINE_MS: String(DEADLINE_MS),
        DTR_PREFILL_QUEUE_MAX: '1',
      },
      { bundle: BUNDLE },
    );
    url = demo.url;
  }, 120_000);

  afterAll(() => demo?.stop());

  /** A signed-in session launched for one of the orders (so the payer answers that order's questionnaire). */
  const launch = (order: keyof typeof ORDERS): Promise<TestBrowser> =>
    launchSession(demo, { patient: PATIENT, user: 'pl-pr', fhirContext: [{ reference: `DeviceRequest/pl-${order}` }] });

  const prepare = (browser: TestBrowser) => prepareQuestionnaires(demo, browser);

  /** The OperationOutcome of a prepare stopped at the deadline: names it, carries no patient data. */
  function expectDeadline(seen: { status: number; body: string }): void {
    expect(seen.status, seen.body).toBe(504);
    const outcome = JSON.parse(seen.body) as Outcome;
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue[0]).toMatchObject({
      code: 'timeout',
      diagnostics: expect.stringMatching(new RegExp(`did not finish within its deadline of ${DEADLINE_MS} ms`)),
    });
    expect(seen.body).not.toContain(BIRTH_DATE);
    expect(seen.body).not.toContain('Quint');
  }

  it('stops a backtracking FHIRPath regular expression at the deadline; a session queued behind it is prefilled', async () => {
    const [hostile, fine] = await Promise.all([launch('regex'), launch('fine')]);
    // One worker: the well-behaved session's job waits for the hostile one, which is stopped, its worker replaced.
    const [stopped, served] = await Promise.all([prepare(hostile), prepare(fine)]);
    expectDeadline(stopped);
    expect(served.status, served.body).toBe(200);
    expect(served.body).toContain(`"valueDate":"${BIRTH_DATE}"`);
    expect(served.body).toContain('"valueInteger":42');
    // The server is healthy and the hostile session can be tried again (it is stopped again, the same way).
    expect((await fetch(`${url}/health/live`)).status).toBe(200);
    expectDeadline(await prepare(hostile));
  });

  it('stops a CQL expand of a huge interval and a query over billions of tuples; the page names the deadline', async () => {
    for (const order of ['expand', 'nested'] as const) {
      const browser = await launch(order);
      const page = await browser.request(`${url}/app/questionnaires`, { method: 'POST' });
      expect(page.status, page.body).toBe(504);
      expect(page.headers['content-type']).toMatch(/^text\/html/);
      expect(page.body).toMatch(
        new RegExp(`<p id="message">the prefill did not finish within its deadline of ${DEADLINE_MS} ms`),
      );
      expect(page.body).not.toContain(BIRTH_DATE);
    }
  });

  it('refuses a second prepare of the same session while the first runs (409)', async () => {
    const browser = await launch('regex');
    const both = await Promise.all([prepare(browser), prepare(browser)]);
    const byStatus = both.sort((a, b) => a.status - b.status);
    expect(byStatus.map((s) => s.status)).toEqual([409, 504]);
    expect(JSON.parse(byStatus[0]!.body)).toMatchObject({
      issue: [{ code: 'conflict', diagnostics: expect.stringMatching(/already being prepared/) }],
    });
    // Once it has ended, the session may prepare again.
    expectDeadline(await prepare(browser));
  });

  it('refuses a prepare past the queue cap with 503 and Retry-After', async () => {
    const sessions = await Promise.all([launch('regex'), launch('regex'), launch('regex')]);
    // The worker replaced after the last stopped job is ready once a well-behaved prepare has gone through.
    expect((await prepare(await launch('fine'))).status).toBe(200);
    // One runs, one waits (DTR_PREFILL_QUEUE_MAX=1), the third is refused.
    const answers = await Promise.all(sessions.map(prepare));
    const byStatus = answers.sort((a, b) => a.status - b.status);
    expect(byStatus.map((s) => s.status)).toEqual([503, 504, 504]);
    expect(byStatus[0]!.headers['retry-after']).toBe(String(Math.ceil(DEADLINE_MS / 1000)));
    expect(JSON.parse(byStatus[0]!.body)).toMatchObject({
      issue: [{ code: 'transient', diagnostics: expect.stringMatching(/as many questionnaires as it can queue/) }],
    });
  });
});
