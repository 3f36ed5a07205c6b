import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { hcpcsRules, type RunningDemo, startDemo } from './support/demo.js';
import { BIRTH_DATE_ITEM, deviceOrder, PATIENT_LAUNCH_CONTEXT, sandboxCoverage } from './support/fixtures.js';
import { ehrLaunchUrl, launchSession, prepareForm, prepareQuestionnaires } from './support/launch.js';
import { repoRoot } from './support/processes.js';

const QUESTIONNAIRE = {
  resourceType: 'Questionnaire',
  id: 'retention-check',
  url: 'http://example.org/dtr/Questionnaire/retention-check',
  version: '1.0.0',
  title: 'Retention check',
  status: 'active',
  extension: [PATIENT_LAUNCH_CONTEXT],
  item: [BIRTH_DATE_ITEM],
};
const PATIENT = 'rt-p1';
const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resourceType: 'Patient', id: PATIENT, birthDate: '1950-03-04', name: [{ family: 'Roe', given: ['Jane'] }] },
    { resourceType: 'Practitioner', id: 'rt-pr', name: [{ family: 'Ruiz', given: ['Dana'] }] },
    sandboxCoverage('rt-cov', PATIENT),
    deviceOrder('rt-order', PATIENT, 'E0997'),
  ].map((resource) => ({ resource })),
};
/** Text an upstream might put in an error body (a patient, a token): must never reach a browser or a log line. */
const MARKER = `PHI-MARKER-${randomBytes(6).toString('hex')} Jane Roe SSN 123-45-6789`;

const hashOf = (sessionId: string) => createHash('sha256').update(sessionId).digest('base64url');

/**
 * Sessions and retention over real HTTP and real PostgreSQL: the built server with the sandbox EHR and payer
 * (`npm start`), `dtr purge` as an operator runs it, rows dated back in the database instead of waiting.
 */
describe('sessions, retention purge and upstream errors', () => {
  let demo: RunningDemo;
  let url: string;
  let fhirBase: string;
  let ehr: string;
  let payer: string;
  let client: pg.Client;
  const sql = async <T extends Record<string, unknown>>(text: string, params: unknown[] = []) =>
    (await client.query<T>(text, params)).rows;
  const count = async (text: string, params: unknown[] = []) =>
    Number((await sql<{ n: string }>(`SELECT count(*) AS n FROM ${text}`, params))[0]!.n);

  beforeAll(async () => {
    demo = await startDemo(
      inject('adminDatabaseUrl'),
      'dtr_retention',
      { DTR_PREFILL_WORKERS: '0' },
      {
        bundle: BUNDLE,
        packages: {
          package: {
            Questionnaire: QUESTIONNAIRE,
            rules: hcpcsRules({ description: 'retention', code: 'E0997', questionnaire: `${QUESTIONNAIRE.url}|1.0.0` }),
          },
        },
      },
    );
    ({ url, fhirBase, ehr, payer } = demo);
    client = new pg.Client({ connectionString: demo.db.url });
    await client.connect();
  }, 120_000);

  afterAll(async () => {
    await client?.end();
    await demo?.stop();
  });

  /** An EHR launch for the patient's order in `browser` (a new one unless given); returns its session's id hash. */
  async function launch(browser = new TestBrowser()): Promise<{ browser: TestBrowser; idHash: string }> {
    await launchSession(
      demo,
      { patient: PATIENT, user: 'rt-pr', fhirContext: [{ reference: 'DeviceRequest/rt-order' }] },
      browser,
    );
    return { browser, idHash: hashOf(browser.cookie(new URL(url).host, 'dtr_session')!) };
  }
  const prepare = async (browser: TestBrowser) => {
    await prepareForm(demo, browser);
  };
  const tokensOf = (idHash: string) => count(`session_token WHERE session_id_hash = $1`, [idHash]);
  const dtr = (args: string[], env: Record<string, string> = {}) => {
    const run = spawnSync(process.execPath, [path.join(repoRoot, 'bin/dtr.mjs'), ...args], {
      cwd: repoRoot,
      env: {
        PATH: process.env['PATH'] ?? '/usr/bin:/bin',
        HOME: process.env['HOME'] ?? '/root',
        DATABASE_URL: demo.db.url,
        ...env,
      },
      encoding: 'utf8',
    });
    return { code: run.status, stdout: run.stdout, stderr: run.stderr };
  };

  it('a session unused for the idle timeout answers as expired, its tokens deleted', async () => {
    const { browser, idHash } = await launch();
    expect((await browser.request(`${url}/api/session`)).status).toBe(200);
    expect(await tokensOf(idHash)).toBe(1);
    // Last used 31 minutes ago (the default idle timeout is 30), well inside its 8-hour lifetime.
    await sql(`UPDATE app_session SET last_seen_at = now() - interval '31 minutes' WHERE id_hash = $1`, [idHash]);
    const api = await browser.request(`${url}/api/session`);
    expect(api.status).toBe(401);
    expect(JSON.parse(api.body).issue[0].diagnostics).toMatch(/session has expired.*launch the app again/);
    // The page answers with a readable page (still a 401), the API with an OperationOutcome.
    const page = await browser.request(`${url}/app`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(401);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.body).toMatch(/<h1>Session expired<\/h1>.*this session has expired/);
    expect(await tokensOf(idHash)).toBe(0);
  });

  it('a new launch in the same browser ends the older session (revoked, tokens deleted); the new one works', async () => {
    const first = await launch();
    const oldCookie = first.browser.cookie(new URL(url).host, 'dtr_session')!;
    const second = await launch(first.browser);
    expect(second.idHash).not.toBe(first.idHash);
    const stale = await fetch(`${url}/api/session`, { headers: { cookie: `dtr_session=${oldCookie}` } });
    expect(stale.status).toBe(401);
    expect(await tokensOf(first.idHash)).toBe(0);
    expect(
      (await sql(`SELECT revoked_at FROM app_session WHERE id_hash = $1`, [first.idHash]))[0]!['revoked_at'],
    ).not.toBeNull();
    expect((await second.browser.request(`${url}/api/session`)).status).toBe(200);
    expect(await tokensOf(second.idHash)).toBe(1);
    // A launch in another browser leaves this one's session alone.
    await launch();
    expect((await second.browser.request(`${url}/api/session`)).status).toBe(200);
  });

  it('logout deletes the session tokens from the database', async () => {
    const { browser, idHash } = await launch();
    expect(await tokensOf(idHash)).toBe(1);
    expect((await browser.request(`${url}/api/session/logout`, { method: 'POST' })).status).toBe(200);
    expect(await tokensOf(idHash)).toBe(0);
  });

  /** The windows the purge runs with in these tests (the CLI reads them from its environment, as the server does). */
  const WINDOWS = {
    DTR_RETENTION_SESSION_DAYS: '2',
    DTR_RETENTION_COMPLETED_FORM_DAYS: '1',
    DTR_RETENTION_DRAFT_DAYS: '5',
    DTR_RETENTION_LAUNCH_ATTEMPT_HOURS: '24',
    DTR_RETENTION_PACKAGE_DAYS: '10',
    DTR_RETENTION_AUDIT_DAYS: '400',
  };
  /** `dtr purge` output as counts by label. */
  const countsOf = (stdout: string) =>
    Object.fromEntries(
      stdout
        .split('\n')
        .map((line) => /^ {2}(.+?)\s{2,}(\d+)$/.exec(line))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1]!, Number(m[2])]),
    );
  const exists = async (table: string, column: string, value: string) =>
    (await count(`${table} WHERE ${column} = $1`, [value])) > 0;

  it('the server purges at start-up, holding the job lease, and audits the run with counts only', async () => {
    let job: Record<string, unknown> | undefined;
    for (let i = 0; i < 300 && !job?.['last_finished_at']; i++) {
      job = (await sql(`SELECT * FROM scheduled_job WHERE name = 'purge'`))[0];
      if (!job?.['last_finished_at']) await new Promise((r) => setTimeout(r, 100));
    }
    expect(job).toMatchObject({
      lease_owner: null,
      lease_until: null,
      last_result: expect.objectContaining({ sessions: expect.any(Number) }),
    });
    const [event] = await sql<{ agent: Array<{ type: string }>; detail: Record<string, unknown>; action: string }>(
      `SELECT agent, detail, action FROM audit_event WHERE subtype_code = 'retention-purge' ORDER BY seq LIMIT 1`,
    );
    expect(event).toMatchObject({ action: 'D', agent: [{ type: 'system', who: 'dtr-backend', requestor: true }] });
    expect(Object.values(event!.detail).every((v) => typeof v === 'number')).toBe(true);
  });

  it('dtr purge --dry-run counts and deletes nothing; dtr purge deletes only what is past its window', async () => {
    // A: ended 3 days ago; its form completed 2 days ago (completed window 1 day) -> the form goes, then the session.
    const a = await launch();
    await prepare(a.browser);
    // B: ended 3 days ago; its draft last changed 3 days ago (draft window 5 days) -> kept, and its session with it.
    const b = await launch();
    await prepare(b.browser);
    // C: live; a draft untouched for 10 days stays while its session lives.
    const c = await launch();
    await prepare(c.browser);
    // D: idle since yesterday, no forms: its tokens go, its row stays (session window 2 days).
    const d = await launch();
    await sql(`UPDATE app_session SET expires_at = now() - interval '3 days' WHERE id_hash = ANY($1)`, [
      [a.idHash, b.idHash],
    ]);
    await sql(
      `UPDATE form_session SET status = 'completed', updated_at = now() - interval '2 days' WHERE session_id_hash = $1`,
      [a.idHash],
    );
    await sql(
      `UPDATE form_session SET status = 'in-progress', updated_at = now() - interval '3 days' WHERE session_id_hash = $1`,
      [b.idHash],
    );
    await sql(`UPDATE form_session SET updated_at = now() - interval '10 days' WHERE session_id_hash = $1`, [c.idHash]);
    await sql(`UPDATE app_session SET last_seen_at = now() - interval '1 day' WHERE id_hash = $1`, [d.idHash]);
    // Launch attempts: one used 25 hours ago (window 24 hours) goes, one used 23 hours ago stays.
    const attempts = await sql<{ state_hash: string }>(
      `SELECT state_hash FROM launch_attempt ORDER BY created_at DESC LIMIT 2`,
    );
    await sql(
      `UPDATE launch_attempt SET used_at = now() - interval '25 hours', expires_at = now() - interval '25 hours' WHERE state_hash = $1`,
      [attempts[0]!.state_hash],
    );
    await sql(`UPDATE launch_attempt SET used_at = now() - interval '23 hours' WHERE state_hash = $1`, [
      attempts[1]!.state_hash,
    ]);
    // The payer's cached package, last retrieved 9 days ago (window 10 days): kept.
    await sql(`UPDATE package_resource SET retrieved_at = now() - interval '9 days'`);
    await sql(`UPDATE package_selection SET retrieved_at = now() - interval '9 days'`);
    // Audit events 401 and 399 days old (audit window 400 days).
    const old = (
      await sql<{ id: string }>(
        `INSERT INTO audit_event (type_code, action, outcome, recorded_at) VALUES ('rest', 'R', '0', now() - interval '401 days') RETURNING id`,
      )
    )[0]!.id;
    const kept = (
      await sql<{ id: string }>(
        `INSERT INTO audit_event (type_code, action, outcome, recorded_at) VALUES ('rest', 'R', '0', now() - interval '399 days') RETURNING id`,
      )
    )[0]!.id;
    const packageRows = await count('package_resource');
    expect(packageRows).toBeGreaterThan(0);

    const snapshot = async () => ({
      tokens: await count('session_token'),
      sessions: await count('app_session'),
      forms: await count('form_session'),
      attempts: await count('launch_attempt'),
      packages: await count('package_resource'),
      audit: await count('audit_event'),
    });
    const before = await snapshot();
    const dry = dtr(['purge', '--dry-run'], WINDOWS);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/dry run: nothing deleted/);
    const wouldDelete = countsOf(dry.stdout);
    expect(await snapshot()).toEqual(before);

    const run = dtr(['purge'], WINDOWS);
    expect(run.code, run.stderr).toBe(0);
    const deleted = countsOf(run.stdout);
    // The dry run counted what the run then deleted (nothing else changed in between).
    expect(deleted).toEqual(wouldDelete);
    expect(deleted).toMatchObject({
      'audit events past the audit window': 1,
      'completed or stopped forms past their window': expect.any(Number),
      'launch attempts past their window': expect.any(Number),
    });
    expect(deleted['completed or stopped forms past their window']).toBeGreaterThanOrEqual(1);

    // A: form and session gone. B: draft and session kept, tokens gone. C: untouched. D: tokens gone, row kept.
    expect(await count('form_session WHERE session_id_hash = $1', [a.idHash])).toBe(0);
    expect(await exists('app_session', 'id_hash', a.idHash)).toBe(false);
    expect(await count('form_session WHERE session_id_hash = $1', [b.idHash])).toBeGreaterThan(0);
    expect(await exists('app_session', 'id_hash', b.idHash)).toBe(true);
    expect(await tokensOf(b.idHash)).toBe(0);
    expect(await count('form_session WHERE session_id_hash = $1', [c.idHash])).toBeGreaterThan(0);
    expect(await tokensOf(c.idHash)).toBe(1);
    expect((await c.browser.request(`${url}/api/session`)).status).toBe(200);
    expect(await exists('app_session', 'id_hash', d.idHash)).toBe(true);
    expect(await tokensOf(d.idHash)).toBe(0);
    expect(await exists('launch_attempt', 'state_hash', attempts[0]!.state_hash)).toBe(false);
    expect(await exists('launch_attempt', 'state_hash', attempts[1]!.state_hash)).toBe(true);
    expect(await count('package_resource')).toBe(packageRows);
    expect(await exists('audit_event', 'id', old)).toBe(false);
    expect(await exists('audit_event', 'id', kept)).toBe(true);

    // The run is audited: an operator's purge, with its counts and nothing else.
    const [event] = await sql<{ agent: Array<{ type: string }>; detail: Record<string, number> }>(
      `SELECT agent, detail FROM audit_event WHERE subtype_code = 'retention-purge' ORDER BY seq DESC LIMIT 1`,
    );
    expect(event!.agent[0]).toMatchObject({ type: 'operator' });
    expect(event!.detail).toMatchObject({ auditEvents: 1, sessions: deleted['ended sessions past their window'] });
    expect(JSON.stringify(event)).not.toContain(a.idHash);

    // The package cache past its window goes whole (a later session asks the payer for everything again).
    await sql(`UPDATE package_resource SET retrieved_at = now() - interval '11 days'`);
    await sql(`UPDATE package_selection SET retrieved_at = now() - interval '11 days'`);
    const again = countsOf(dtr(['purge'], WINDOWS).stdout);
    expect(again['cached package resources of payers idle past the window']).toBe(packageRows);
    expect(await count('package_resource')).toBe(0);
    expect(await count('package_selection')).toBe(0);
    const fresh = await launch();
    await prepare(fresh.browser);
    expect(await count('package_resource')).toBeGreaterThan(0);
  });

  it('the audit trail stays append-only outside the purge, and the purge never goes inside a year', async () => {
    const [{ id }] = (await sql<{ id: string }>(
      `INSERT INTO audit_event (type_code, action, outcome, recorded_at) VALUES ('rest', 'R', '0', now() - interval '200 days') RETURNING id`,
    )) as [{ id: string }];
    await expect(sql(`UPDATE audit_event SET outcome = '8' WHERE id = $1`, [id])).rejects.toThrow(/append-only/);
    await expect(sql(`DELETE FROM audit_event WHERE id = $1`, [id])).rejects.toThrow(/append-only/);
    await expect(sql(`SELECT audit_event_purge(now() - interval '100 days')`)).rejects.toThrow(/at least 365 days/);
    // The configuration cannot ask for less either.
    const refused = dtr(['purge'], { ...WINDOWS, DTR_RETENTION_AUDIT_DAYS: '100' });
    expect(refused.code).toBe(78);
    expect(refused.stderr).toMatch(/DTR_RETENTION_AUDIT_DAYS: must be at least 365/);
    expect(await exists('audit_event', 'id', id)).toBe(true);
  });

  it('one purge at a time: while another instance holds the lease, dtr purge refuses', async () => {
    await sql(
      `UPDATE scheduled_job SET lease_owner = 'another-instance', lease_until = now() + interval '10 minutes' WHERE name = 'purge'`,
    );
    try {
      const busy = dtr(['purge'], WINDOWS);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toMatch(/another instance is purging now/);
      // A dry run only counts: it needs no lease.
      expect(dtr(['purge', '--dry-run'], WINDOWS).code).toBe(0);
      // A lease that ran out (its holder died) is taken over.
      await sql(`UPDATE scheduled_job SET lease_until = now() - interval '1 second' WHERE name = 'purge'`);
      expect(dtr(['purge'], WINDOWS).code).toBe(0);
    } finally {
      await sql(`UPDATE scheduled_job SET lease_owner = NULL, lease_until = NULL WHERE name = 'purge'`);
    }
  });

  const setFaults = (origin: string, faults: Record<string, unknown>) =>
    fetch(`${origin}/_sandbox/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(faults),
    });
  const markerId = MARKER.split(' ')[0]!;
  /** The server's JSON log lines written for one request. */
  const logLinesOf = (requestId: string) =>
    demo.app
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l['requestId'] === requestId);
  /** A 502 whose message is ours with the request id, and a log line with the upstream's status and our code. */
  const expectGenericUpstreamError = (answer: { status: number; body: string; headers: Record<string, string> }) => {
    const requestId = answer.headers['x-request-id']!;
    expect(answer.status).toBe(502);
    const diagnostics = (JSON.parse(answer.body) as { issue: Array<{ diagnostics: string }> }).issue[0]!.diagnostics;
    expect(diagnostics).toMatch(new RegExp(`answered 500 \\(request id ${requestId}\\)$`));
    expect(logLinesOf(requestId)).toContainEqual(
      expect.objectContaining({ level: 'error', code: 'UPSTREAM_ERROR', upstreamStatus: 500 }),
    );
  };

  it('an EHR error body (it may quote a patient) reaches neither the browser nor the log', async () => {
    const { browser } = await launch();
    await setFaults(ehr, { errorRate: 1, errorStatus: 500, errorDiagnostics: MARKER, paths: ['/fhir'] });
    let prepared;
    try {
      prepared = await prepareQuestionnaires(demo, browser);
    } finally {
      await setFaults(ehr, {});
    }
    expectGenericUpstreamError(prepared);
    expect(prepared.body).not.toContain(markerId);
    expect(demo.app.output()).not.toContain(markerId);
  });

  it('a payer error body reaches neither the browser nor the log: a generic message and the request id', async () => {
    const { browser } = await launch();
    await setFaults(payer, { errorRate: 1, errorStatus: 500, errorDiagnostics: MARKER, paths: ['/fhir'] });
    let prepared;
    try {
      prepared = await prepareQuestionnaires(demo, browser);
    } finally {
      await setFaults(payer, {});
    }
    expectGenericUpstreamError(prepared);
    expect(prepared.body).not.toContain(markerId);
    expect(demo.app.output()).not.toContain(markerId);
  });

  it('a token endpoint error body reaches neither the sign-in page nor the log', async () => {
    const smart = (await (await fetch(`${fhirBase}/.well-known/smart-configuration`)).json()) as {
      token_endpoint: string;
    };
    await setFaults(ehr, {
      errorRate: 1,
      errorStatus: 500,
      errorDiagnostics: MARKER,
      paths: [new URL(smart.token_endpoint).pathname],
    });
    let hops;
    try {
      hops = await new TestBrowser().navigate(await ehrLaunchUrl(demo, { patient: PATIENT, user: 'rt-pr' }));
    } finally {
      await setFaults(ehr, {});
    }
    const page = hops.at(-1)!;
    expect(page.status).toBe(403);
    expect(page.body).toContain(`Reference: <code>${page.headers['x-request-id']}</code>`);
    expect(page.body).not.toContain(markerId);
    expect(demo.app.output()).not.toContain(markerId);
  });
});
