#!/usr/bin/env node
// npm run chaos:disclosure — N submissions (CHAOS_SUBMISSIONS, default 200) sent by clinicians over real HTTP while
// the DTR server is killed with SIGKILL and restarted (CHAOS_KILLS times, default 3), its PostgreSQL is restarted once,
// and the sandbox EHR and payer inject 5xx, 429, hangs and responses dropped after commit on the write-back and
// submission endpoints. Every process is ours, on 127.0.0.1: an embedded PostgreSQL in a temporary folder, the sandbox
// (its own process, which survives the kills) and the server (dist/). Each clinician: launch, prefill, complete,
// authorize disclosure, review, choose, Send (clicking again when the server is away or the EHR refused the copy).
// Then the faults stop and the outbox drains. It prints: submissions requested, delivered, dead letters, duplicates at
// the payer (a key accepted twice), duplicates in the EHR (more than one copy per submission), early sends (the payer
// received it before the EHR copy was verified), lost (neither delivered nor dead), and send → delivered p50/p95.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { clinicianToSend, peerRecords } from './lib/clinician.mjs';
import {
  freePort,
  oxygenPatients,
  quantile,
  root,
  start,
  serveRegistered,
  startSandboxProcess,
} from './lib/harness.mjs';

const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PATIENTS = 24;

/** Child mode: the DTR server from dist/, registered with the sandbox peers named in the environment. */
const serve = () =>
  serveRegistered(
    {
      ehrFhirBase: process.env.CHAOS_EHR_FHIR,
      payerFhirBase: process.env.CHAOS_PAYER_FHIR,
      payerTokenEndpoint: process.env.CHAOS_PAYER_TOKEN,
    },
    'chaos server',
  );

/** Patients with a stationary-oxygen order; a third have their qualifying condition labelled (a choice to make). */
function patients() {
  return oxygenPatients('chaos', PATIENTS, (id, n) => [
    {
      resourceType: 'Condition',
      id: `${id}-cond`,
      ...(n % 3 === 0
        ? { meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' }] } }
        : {}),
      code: { coding: [{ system: 'http://snomed.info/sct', code: '13645005' }] },
      subject: { reference: `Patient/${id}` },
    },
  ]);
}

/** One clinician, start to Send; returns the submission id and when Send was first clicked. */
async function clinician(serverUrl, ehrFhir, n) {
  const patient = `chaos-${1 + (n % PATIENTS)}`;
  const { ids, sentAt } = await clinicianToSend(serverUrl, ehrFhir, { patient, user: 'chaos-pr', n });
  return { id: ids[0], sentAt };
}

const FAULTS = [
  ['ehr', { errorRate: 0.4, errorStatus: 503, paths: ['/fhir/DocumentReference', '/fhir/Provenance'] }],
  ['ehr', { errorRate: 0.4, errorStatus: 500, paths: ['/fhir/DocumentReference'] }],
  ['ehr', { errorRate: 0.4, errorStatus: 429, paths: ['/fhir/DocumentReference', '/fhir/Provenance'] }],
  ['ehr', { dropResponseAfterCommit: true, paths: ['/fhir/DocumentReference'] }],
  ['ehr', { hang: true, paths: ['/fhir/Provenance'] }],
  ['payer', { errorRate: 0.5, errorStatus: 503, paths: ['/fhir/Bundle'] }],
  ['payer', { errorRate: 0.5, errorStatus: 429, paths: ['/fhir/Bundle'] }],
  ['payer', { dropResponseAfterCommit: true, paths: ['/fhir/Bundle'] }],
  ['payer', { hang: true, paths: ['/fhir/Bundle'] }],
];

async function setFaults(origin, settings) {
  await fetch(`${origin}/_sandbox/faults`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(settings),
  }).catch(() => undefined);
}

async function main() {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const total = Number(process.env.CHAOS_SUBMISSIONS ?? 200);
  const kills = Number(process.env.CHAOS_KILLS ?? 3);
  const concurrency = Number(process.env.CHAOS_CONCURRENCY ?? 6);
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-chaos-'));
  // The embedded server runs as user postgres when we are root: it must be able to enter the folder.
  chmodSync(dir, 0o755);
  const { EmbeddedPostgresSupervisor } = await load('libs/persistence/src/index.js');
  const [dbPort, serverPort] = await Promise.all([freePort(), freePort()]);
  let db = await EmbeddedPostgresSupervisor.start({ dataDir: path.join(dir, 'pg'), database: 'dtr', port: dbPort });
  const serverUrl = `http://127.0.0.1:${serverPort}`;
  const { sandbox, ehrFhir, payerFhir, payerToken } = await startSandboxProcess(dir, serverUrl, patients());
  const ehr = new URL(ehrFhir).origin;
  const payer = new URL(payerFhir).origin;
  const env = {
    DATABASE_URL: db.url,
    DTR_PORT: String(serverPort),
    DTR_ENCRYPTION_KEYS: `chaos:${randomBytes(32).toString('base64')}`,
    DTR_DATA_DIR: dir,
    DTR_LOG_LEVEL: 'warn',
    DTR_DELIVERY_TIMEOUT_MS: '2000',
    DTR_DELIVERY_LEASE_MS: '5000',
    DTR_DELIVERY_RETRY_BASE_MS: '200',
    DTR_DELIVERY_RETRY_MAX_MS: '2000',
    DTR_DELIVERY_MAX_ATTEMPTS: '30',
    DTR_DELIVERY_POLL_MS: '250',
    DTR_WRITE_BACK_LEASE_MS: '8000',
    CHAOS_EHR_FHIR: ehrFhir,
    CHAOS_PAYER_FHIR: payerFhir,
    CHAOS_PAYER_TOKEN: payerToken,
    CHAOS_CHILD: 'serve',
  };
  let server;
  let stopping = false;
  const startServer = async () => {
    server = start([path.join(root, 'scripts', 'chaos-disclosure.mjs')], env, /chaos server ready/, 'server');
    const current = server;
    void current.exited.then((code) => {
      // An exit we did not ask for (the database went away under it): start again, as a supervisor would.
      if (!stopping && server === current && code !== 'SIGKILL') void startServer().catch(() => undefined);
    });
    await current.matched;
  };
  await startServer();
  process.stderr.write(
    `chaos: ${total} submissions, ${concurrency} clinicians at a time, ${kills} server kills, one database restart\n`,
  );

  const results = [];
  const failures = [];
  let next = 0;
  let finished = 0;
  const clinicians = Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const n = next++;
      try {
        results.push(await clinician(serverUrl, ehrFhir, n));
      } catch (error) {
        failures.push(error.message);
      }
      finished++;
    }
  });
  const killAt = Array.from({ length: kills }, (_, i) => Math.floor(((i + 1) * total) / (kills + 2)));
  const dbRestartAt = Math.floor(total * 0.55);
  let dbRestarted = false;
  const monkey = (async () => {
    let f = 0;
    while (finished < total) {
      const [peer, settings] = FAULTS[f++ % FAULTS.length];
      await setFaults(peer === 'ehr' ? ehr : payer, settings);
      await sleep(1500);
      await setFaults(peer === 'ehr' ? ehr : payer, {});
      await sleep(1000);
      if (killAt.length > 0 && results.length >= killAt[0]) {
        killAt.shift();
        process.stderr.write(`chaos: SIGKILL the server at ${results.length} sent\n`);
        server.child.kill('SIGKILL');
        await server.exited;
        await sleep(500);
        await startServer();
      }
      if (!dbRestarted && results.length >= dbRestartAt) {
        dbRestarted = true;
        process.stderr.write(`chaos: restarting PostgreSQL at ${results.length} sent\n`);
        await db.stop();
        await sleep(1000);
        db = await EmbeddedPostgresSupervisor.start({ dataDir: path.join(dir, 'pg'), database: 'dtr', port: dbPort });
      }
    }
  })();
  await Promise.all(clinicians);
  await monkey;
  await Promise.all([setFaults(ehr, {}), setFaults(payer, {})]);

  // Drain: every submission delivered or dead, or the deadline.
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const deadline = Date.now() + Number(process.env.CHAOS_DRAIN_MS ?? 180_000);
  let open = Infinity;
  while (open > 0 && Date.now() < deadline) {
    const { rows } = await client.query(
      `SELECT count(*)::int AS n FROM submission WHERE state NOT IN ('delivered', 'dead')`,
    );
    open = rows[0].n;
    if (open > 0) await sleep(500);
  }
  const report = await measure(client, results, ehr, payer);
  await client.end();
  stopping = true;
  server.child.kill('SIGTERM');
  sandbox.child.kill('SIGTERM');
  await Promise.all([server.exited, sandbox.exited]);
  await db.stop();
  rmSync(dir, { recursive: true, force: true });
  print(total, results, failures, report);
  if (report.lost + report.payerDuplicates + report.ehrDuplicates + report.early > 0 || failures.length > 0)
    process.exitCode = 1;
}

async function measure(client, results, ehr, payer) {
  const ids = new Set(results.map((r) => r.id));
  const { rows } = await client.query(`SELECT id, state FROM submission`);
  const states = new Map(rows.map((r) => [r.id, r.state]));
  const events = await client.query(
    `SELECT submission_id::text AS id, subtype_code AS kind, recorded_at FROM audit_event
     WHERE subtype_code IN ('ehr-read-back', 'payer-answer') AND outcome = '0' AND submission_id IS NOT NULL`,
  );
  const verifiedAt = new Map();
  const deliveredAt = new Map();
  for (const e of events.rows)
    (e.kind === 'ehr-read-back' ? verifiedAt : deliveredAt).set(e.id, e.recorded_at.getTime());
  const { received, accepted, firstAt, copies } = await peerRecords(ehr, payer);
  const latency = results.filter((r) => deliveredAt.has(r.id)).map((r) => deliveredAt.get(r.id) - r.sentAt);
  return {
    delivered: [...ids].filter((id) => states.get(id) === 'delivered').length,
    dead: [...ids].filter((id) => states.get(id) === 'dead').length,
    lost: [...ids].filter((id) => states.get(id) !== 'delivered' && states.get(id) !== 'dead').length,
    payerDuplicates: [...accepted.values()].filter((n) => n > 1).length,
    redeliveries: received.filter((r) => r.duplicate).length,
    ehrDuplicates: [...copies.values()].filter((n) => n > 1).length,
    early: [...firstAt].filter(([id, at]) => !verifiedAt.has(id) || !copies.has(id) || at < verifiedAt.get(id)).length,
    p50: quantile(latency, 0.5),
    p95: quantile(latency, 0.95),
  };
}

function print(total, results, failures, r) {
  const line = (label, value) => process.stdout.write(`${label.padEnd(52)} ${value}\n`);
  process.stdout.write('\nchaos:disclosure\n');
  line('submissions requested', total);
  line('submissions made (Send answered)', results.length);
  line('delivered', r.delivered);
  line('dead letters (retries exhausted)', r.dead);
  line('duplicates at the payer (one key accepted twice)', r.payerDuplicates);
  line('repeats the payer answered from its first result', r.redeliveries);
  line('duplicates in the EHR (copies per submission > 1)', r.ehrDuplicates);
  line('sent before the EHR copy was verified', r.early);
  line('lost (neither delivered nor dead)', r.lost + (total - results.length));
  line('send → delivered p50 / p95 (ms)', `${Math.round(r.p50)} / ${Math.round(r.p95)}`);
  if (failures.length > 0)
    line('clinician flows that failed', `${failures.length}: ${[...new Set(failures)].slice(0, 3).join(' | ')}`);
}

if (process.env.CHAOS_CHILD === 'serve') await serve();
else await main();
