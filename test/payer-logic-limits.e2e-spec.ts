import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { repoRoot, spawnServer, type SpawnedServer } from './support/processes.js';

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
  let db: ScratchDatabase;
  let dir: string;
  let app: SpawnedServer;
  let url: string;
  let fhirBase: string;

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_payer_limits');
    dir = mkdtempSync(path.join(tmpdir(), 'dtr-payer-limits-'));
    writeFileSync(path.join(dir, 'patients.json'), JSON.stringify(BUNDLE));
    app = spawnServer(
      {
        DATABASE_URL: db.url,
        DTR_PORT: '0',
        SANDBOX_EHR_PORT: '0',
        SANDBOX_PAYER_PORT: '0',
        SANDBOX_BUNDLES: path.join(dir, 'patients.json'),
        SANDBOX_PACKAGE_DIRS: path.join(repoRoot, 'test/fixtures/hostile-package'),
        DTR_PREFILL_WORKERS: '1',
        DTR_PREFILL_DEADLINE_MS: String(DEADLINE_MS),
        DTR_PREFILL_QUEUE_MAX: '1',
      },
      'scripts/start.mjs',
    );
    url = await app.ready;
    const deadline = Date.now() + 30_000;
    while (!/Sandbox payer: (http:\/\/\S+)/.test(app.output()) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    fhirBase = /Sandbox EHR: (http:\/\/\S+)/.exec(app.output())![1]!;
  }, 120_000);

  afterAll(async () => {
    if (app && app.child.exitCode === null && app.child.signalCode === null) {
      app.child.kill('SIGTERM');
      await app.exited;
    }
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A signed-in session launched for one of the orders (so the payer answers that order's questionnaire). */
  async function launch(order: keyof typeof ORDERS): Promise<TestBrowser> {
    const created = await fetch(`${new URL(fhirBase).origin}/_sandbox/launches`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        patient: PATIENT,
        user: 'pl-pr',
        fhirContext: [{ reference: `DeviceRequest/pl-${order}` }],
      }),
    });
    expect(created.status).toBe(200);
    const { launch: code } = (await created.json()) as { launch: string };
    const browser = new TestBrowser();
    const hops = await browser.navigate(`${url}/launch?iss=${encodeURIComponent(fhirBase)}&launch=${code}`);
    expect(hops.at(-1)!.url).toBe(`${url}/app`);
    return browser;
  }

  const prepare = (browser: TestBrowser) => browser.request(`${url}/api/session/questionnaires`, { method: 'POST' });

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
