import { execFileSync, spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { packagesPerOrder, type RunningDemo, startDemo } from './support/demo.js';
import { BIRTH_DATE_ITEM, deviceOrder, PATIENT_LAUNCH_CONTEXT, sandboxCoverage } from './support/fixtures.js';
import { launchSession } from './support/launch.js';
import { repoRoot, type SpawnedServer } from './support/processes.js';

/**
 * A payer's expression that builds one huge collection (ten thousand items, each selecting the ten thousand again)
 * grows a single array past any heap limit. V8 aborts the whole process it runs in before Node can stop a worker
 * thread, so the payer's logic runs in child processes: that prefill or that save fails (502), the server keeps its
 * process and serves everyone else. The built server with the sandbox EHR and payer, over real HTTP.
 */
const SDC = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/';
const PATIENT = 'cr-p1';
const BIRTH_DATE = '1950-04-05';
/**
 * `%numbers` holds ten thousand numbers; each selects all ten thousand again, so V8 builds one array of a hundred
 * million in a single allocation (the shape that a worker thread's heap limit cannot stop: the process aborts).
 */
const NUMBERS = `'${'a'.repeat(10_000)}'.toChars().select(1)`;
const BUILDS_HUGE = '%numbers.select(%numbers)';
/** At a save: once the clinician has written a note. */
const BUILDS_HUGE_ONCE_NOTED = `iif(%resource.item.where(linkId = 'note').answer.value.exists(), ${BUILDS_HUGE}, false)`;

const questionnaire = (id: string, title: string, ruled: Record<string, unknown>) => ({
  resourceType: 'Questionnaire',
  id,
  url: `http://example.org/dtr/Questionnaire/${id}`,
  version: '1.0.0',
  title,
  status: 'active',
  extension: [
    PATIENT_LAUNCH_CONTEXT,
    {
      url: 'http://hl7.org/fhir/StructureDefinition/variable',
      valueExpression: { name: 'numbers', language: 'text/fhirpath', expression: NUMBERS },
    },
  ],
  item: [BIRTH_DATE_ITEM, { linkId: 'note', text: 'Note for the payer', type: 'string' }, ruled],
});
const ruledBy = (extension: string, expression = BUILDS_HUGE) => ({
  linkId: 'huge',
  text: 'Builds a huge collection',
  type: 'boolean',
  readOnly: true,
  extension: [{ url: `${SDC}${extension}`, valueExpression: { language: 'text/fhirpath', expression } }],
});
const ORDERS = {
  prefill: [
    'cr-prefill',
    'E0921',
    questionnaire('crash-prefill', 'Huge prefill', ruledBy('sdc-questionnaire-initialExpression')),
  ],
  save: [
    'cr-save',
    'E0922',
    questionnaire('crash-save', 'Huge save', ruledBy('sdc-questionnaire-calculatedExpression', BUILDS_HUGE_ONCE_NOTED)),
  ],
  fine: ['cr-fine', 'E0923', questionnaire('crash-fine', 'Fine', { linkId: 'remark', text: 'Remark', type: 'string' })],
} as const;

const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resourceType: 'Patient', id: PATIENT, birthDate: BIRTH_DATE, name: [{ family: 'Moss', given: ['Iris'] }] },
    { resourceType: 'Practitioner', id: 'cr-pr', name: [{ family: 'Ruiz', given: ['Dana'] }] },
    sandboxCoverage('cr-cov', PATIENT),
    ...Object.values(ORDERS).map(([id, code]) => deviceOrder(id, PATIENT, code)),
  ].map((resource) => ({ resource })),
};

interface Outcome {
  resourceType: string;
  issue: Array<{ code: string; diagnostics?: string }>;
}

/** The processes whose parent is `pid` (the server's payer logic workers). */
function childrenOf(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return []; // pgrep exits 1 when there are none
  }
}
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("a payer's logic that exhausts its memory stops in its own process, not the server's", () => {
  let demo: RunningDemo;
  let app: SpawnedServer;
  let url: string;
  let dir: string;
  let pid: number;

  beforeAll(async () => {
    const packages = packagesPerOrder(ORDERS);
    demo = await startDemo(
      inject('adminDatabaseUrl'),
      'dtr_payer_crash',
      {
        DTR_PREFILL_WORKERS: '2',
        // Small heaps reach their limit fast; the deadline is far off, so the memory limit is what stops the logic.
        DTR_PREFILL_WORKER_MEMORY_MB: '128',
        DTR_PREFILL_DEADLINE_MS: '120000',
      },
      { bundle: BUNDLE, packages },
    );
    ({ app, url } = demo);
    dir = demo.dir!;
    pid = app.child.pid!;
  }, 120_000);

  afterAll(() => demo?.stop());

  const launch = (order: keyof typeof ORDERS): Promise<TestBrowser> =>
    launchSession(demo, {
      patient: PATIENT,
      user: 'cr-pr',
      fhirContext: [{ reference: `DeviceRequest/${ORDERS[order][0]}` }],
    });

  const prepare = (browser: TestBrowser) => browser.request(`${url}/api/session/questionnaires`, { method: 'POST' });

  /** The server answered, with the same process, and another session's prefill works. */
  async function expectServing(): Promise<void> {
    expect(app.child.exitCode, app.output().slice(-2000)).toBeNull();
    expect(app.child.pid).toBe(pid);
    expect((await fetch(`${url}/health/live`)).status).toBe(200);
    const fine = await prepare(await launch('fine'));
    expect(fine.status, fine.body).toBe(200);
    expect(fine.body).toContain(`"valueDate":"${BIRTH_DATE}"`);
  }

  function expectExhausted(seen: { status: number; body: string }): void {
    expect(seen.status, `${seen.body}\n${app.output().slice(-2000)}`).toBe(502);
    const outcome = JSON.parse(seen.body) as Outcome;
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue[0]!.diagnostics).toMatch(/the payer's logic .*exhausted|more memory than its limit of 128 MB/);
    expect(seen.body).not.toContain(BIRTH_DATE);
    expect(seen.body).not.toContain('Moss');
  }

  it('a prefill that builds a huge collection fails with 502; the server process stays up and prefills others', async () => {
    const workers = childrenOf(pid);
    expectExhausted(await prepare(await launch('prefill')));
    await expectServing();
    // The worker that died was replaced by a new process; the pool is back to its size.
    const now = childrenOf(pid);
    expect(now.length).toBeGreaterThanOrEqual(workers.length);
    expect(now).not.toEqual(workers);
  }, 180_000);

  it('a save whose calculatedExpression builds a huge collection fails with 502; the server serves others', async () => {
    // Prefilled without a note, the calculated value is false; the clinician's note makes the rules build it.
    const browser = await launch('save');
    const prepared = await prepare(browser);
    expect(prepared.status, prepared.body).toBe(200);
    const body = JSON.parse(prepared.body) as { payers: Array<{ questionnaires: Array<{ formId: string }> }> };
    const form = `${url}/api/session/questionnaire-responses/${body.payers[0]!.questionnaires[0]!.formId}`;
    const saved = await browser.request(form, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({
        resourceType: 'QuestionnaireResponse',
        item: [{ linkId: 'note', answer: [{ valueString: 'see attached' }] }],
      }),
    });
    expectExhausted(saved);
    await expectServing();
  }, 180_000);

  it('a stopped server leaves no worker process behind', async () => {
    const workers = childrenOf(pid);
    expect(workers.length).toBeGreaterThanOrEqual(2);
    app.child.kill('SIGTERM');
    await app.exited;
    const deadline = Date.now() + 10_000;
    while (workers.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(workers.filter(alive)).toEqual([]);
  }, 60_000);

  it('`dtr prefill` reports the exhausted heap and exits 1 instead of aborting', () => {
    const run = spawnSync(
      process.execPath,
      [
        path.join(repoRoot, 'bin/dtr.mjs'),
        'prefill',
        '--package',
        path.join(dir, 'prefill'),
        '--patient',
        path.join(dir, 'patients.json'),
        '--order',
        `DeviceRequest/${ORDERS.prefill[0]}`,
      ],
      {
        cwd: repoRoot,
        encoding: 'utf8',
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', DTR_PREFILL_WORKER_MEMORY_MB: '128' },
        timeout: 120_000,
      },
    );
    expect(run.status, run.stderr).toBe(1);
    expect(run.stderr).toContain(
      "dtr: the prefill needed more memory than its limit of 128 MB: the payer's logic (CQL or FHIRPath expressions) exhausted its resources; nothing was prefilled",
    );
    expect(run.stderr).not.toContain('FATAL ERROR');
  }, 150_000);

  it('a server killed outright (SIGKILL) leaves no worker process behind either', async () => {
    // A process holding a pool of two workers, as the server does, killed without a chance to close it.
    const holder = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { PrefillPool } = await import(${JSON.stringify(
          path.join(repoRoot, 'dist/apps/dtr-server/src/dtr/prefill-pool/prefill-pool.js'),
        )});
        const pool = new PrefillPool({ size: 2 });
        console.log(JSON.stringify(pool.pids));
        setInterval(() => undefined, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const line = await new Promise<string>((resolve) =>
      holder.stdout!.once('data', (chunk: Buffer) => resolve(String(chunk))),
    );
    const workers = JSON.parse(line) as number[];
    expect(workers).toHaveLength(2);
    expect(workers.every(alive)).toBe(true);
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.once('exit', resolve));
    const deadline = Date.now() + 10_000;
    while (workers.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(workers.filter(alive)).toEqual([]);
  }, 60_000);
});
