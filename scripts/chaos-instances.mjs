#!/usr/bin/env node
// npm run chaos:instances — two DTR server processes on one PostgreSQL behind a small round-robin balancer on
// 127.0.0.1 (what a deployment with two replicas looks like). Clinicians launch, prepare, complete and Send across
// both instances (every other request lands on the other one); each clicks Send twice at once (one per instance)
// and reads the session on both at once while its EHR tokens are about to expire (the sandbox EHR issues 32-second
// tokens, so nearly every EHR call refreshes). Mid-flight each instance in turn is killed with SIGKILL and started
// again. Then the outbox drains. It prints: sessions lost (a flow that failed, or a session that no longer answers),
// duplicate refreshes (a refresh token the EHR saw exchanged twice), duplicate submissions (two submission ids for
// one form, a key the payer accepted twice, or two copies in the EHR), early sends, and requests per instance.
// Everything is ours, on 127.0.0.1: an embedded PostgreSQL in a temporary folder (or, with DATABASE_URL, a scratch
// database on that server, dropped afterwards), the sandbox, the two servers.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { clinicianToSend, json, peerRecords } from './lib/clinician.mjs';
import { runDatabase } from './lib/database.mjs';
import { freePort, oxygenPatients, root, serveRegistered, start, startSandboxProcess } from './lib/harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PATIENTS = 12;

/** Child mode: one DTR server instance, registered with the sandbox peers as reached through the balancer. */
const serve = () =>
  serveRegistered(
    {
      ehrFhirBase: process.env.CHAOS_EHR_FHIR,
      payerFhirBase: process.env.CHAOS_PAYER_FHIR,
      payerTokenEndpoint: process.env.CHAOS_PAYER_TOKEN,
    },
    'instance',
    process.env.CHAOS_PUBLIC_URL,
  );

/**
 * A round-robin balancer: each request goes to the next instance; when that one refuses the connection (it is down),
 * the request goes to the other, as a balancer's retry on connect failure does. A request cut mid-way answers 502.
 */
function balancer(backends) {
  let next = 0;
  const served = backends.map(() => 0);
  const forward = (i, req, body, res, tried) => {
    const upstream = http.request(
      { host: '127.0.0.1', port: backends[i], method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        served[i]++;
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        answer.once('error', () => res.destroy());
      },
    );
    upstream.once('error', (error) => {
      if (res.headersSent) return void res.destroy();
      if (error.code === 'ECONNREFUSED' && tried < backends.length)
        return forward((i + 1) % backends.length, req, body, res, tried + 1);
      res.writeHead(502, { 'content-type': 'text/plain' }).end('instance went away');
    });
    upstream.end(body);
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => forward(next++ % backends.length, req, Buffer.concat(chunks), res, 1));
  });
  return { server, served };
}

async function main() {
  if (!process.env.CHAOS_SKIP_BUILD)
    execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  const total = Number(process.env.CHAOS_SESSIONS ?? 40);
  const concurrency = Number(process.env.CHAOS_CONCURRENCY ?? 6);
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-twins-'));
  chmodSync(dir, 0o755);
  const [lbPort, portA, portB] = await Promise.all(Array.from({ length: 3 }, freePort));
  const db = await runDatabase(dir, 'chaos_instances');
  const publicUrl = `http://127.0.0.1:${lbPort}`;
  const { sandbox, ehrFhir, payerFhir, payerToken } = await startSandboxProcess(
    dir,
    publicUrl,
    oxygenPatients('twin', PATIENTS),
    {
      SANDBOX_TOKEN_TTL_SECONDS: '32',
      SANDBOX_ROTATE_REFRESH_TOKENS: '1',
    },
  );
  const ehr = new URL(ehrFhir).origin;
  const payer = new URL(payerFhir).origin;
  const env = {
    DATABASE_URL: db.url,
    DTR_ENCRYPTION_KEYS: `twins:${randomBytes(32).toString('base64')}`,
    DTR_AUDIT_HASH_KEY: randomBytes(32).toString('base64'),
    DTR_DATA_DIR: dir,
    DTR_LOG_LEVEL: 'warn',
    DTR_DELIVERY_POLL_MS: '250',
    DTR_DELIVERY_RETRY_BASE_MS: '200',
    DTR_DELIVERY_TIMEOUT_MS: '3000',
    DTR_DELIVERY_LEASE_MS: '5000',
    DTR_WRITE_BACK_LEASE_MS: '8000',
    CHAOS_EHR_FHIR: ehrFhir,
    CHAOS_PAYER_FHIR: payerFhir,
    CHAOS_PAYER_TOKEN: payerToken,
    CHAOS_PUBLIC_URL: publicUrl,
    CHAOS_CHILD: 'serve',
  };
  const instances = [portA, portB].map((port) => ({ port, proc: undefined }));
  const boot = async (i) => {
    const proc = start(
      [path.join(root, 'scripts', 'chaos-instances.mjs')],
      { ...env, DTR_PORT: String(instances[i].port) },
      /instance ready/,
      `instance ${i}`,
    );
    instances[i].proc = proc;
    await proc.matched;
  };
  // One after the other: the first applies the migrations.
  await boot(0);
  await boot(1);
  const lb = balancer(instances.map((i) => i.port));
  await new Promise((resolve) => lb.server.listen(lbPort, '127.0.0.1', resolve));
  process.stderr.write(
    `chaos:instances: ${total} sessions, ${concurrency} at a time, 2 instances behind ${publicUrl}\n`,
  );

  const outcome = await run(publicUrl, ehrFhir, instances, boot, total, concurrency);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  await drain(client, Number(process.env.CHAOS_DRAIN_MS ?? 120_000));
  const report = await measure(client, outcome, publicUrl, ehr, payer);
  await client.end();
  lb.server.close();
  for (const { proc } of instances) proc.child.kill('SIGTERM');
  sandbox.child.kill('SIGTERM');
  await Promise.all([...instances.map((i) => i.proc.exited), sandbox.exited]);
  await db.stop();
  rmSync(dir, { recursive: true, force: true });
  print(total, outcome, report, lb.served);
  if (report.lostSessions + report.duplicateRefreshes + report.duplicateSubmissions + report.early > 0)
    process.exitCode = 1;
}

/** The clinicians, with each instance killed (SIGKILL) and restarted once while they work. */
async function run(publicUrl, ehrFhir, instances, boot, total, concurrency) {
  const results = [];
  const failures = [];
  let next = 0;
  const killAt = [Math.floor(total / 3), Math.floor((2 * total) / 3)];
  let started = 0;
  const kills = [];
  const clinicians = Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const n = next++;
      started++;
      if (killAt.length > 0 && started >= killAt[0]) {
        killAt.shift();
        kills.push(killAndRestart(instances, boot, kills.length % 2));
      }
      try {
        const patient = `twin-${1 + (n % PATIENTS)}`;
        results.push(
          await clinicianToSend(publicUrl, ehrFhir, {
            patient,
            user: 'twin-pr',
            n,
            sends: 2,
            // Both instances read the session at once, as its tokens near expiry: one refresh each, not two.
            between: async (jar) => {
              await Promise.all(Array.from({ length: 4 }, () => json(`${publicUrl}/api/session`, jar)));
            },
          }),
        );
      } catch (error) {
        failures.push(error.message);
      }
    }
  });
  await Promise.all(clinicians);
  await Promise.all(kills);
  return { results, failures, kills: kills.length };
}

async function killAndRestart(instances, boot, i) {
  await sleep(1500);
  process.stderr.write(`chaos:instances: SIGKILL instance ${i}\n`);
  instances[i].proc.child.kill('SIGKILL');
  await instances[i].proc.exited;
  await sleep(3000);
  await boot(i);
}

async function drain(client, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const { rows } = await client.query(
      `SELECT count(*)::int AS n FROM submission WHERE state NOT IN ('delivered', 'dead')`,
    );
    if (rows[0].n === 0 || Date.now() > deadline) return;
    await sleep(500);
  }
}

async function measure(client, { results, failures }, publicUrl, ehr, payer) {
  // A session is lost when it no longer answers, on either instance (two reads: one lands on each).
  let dead = 0;
  for (const r of results) {
    const answers = await Promise.all([
      json(`${publicUrl}/api/session`, r.jar),
      json(`${publicUrl}/api/session`, r.jar),
    ]);
    if (answers.some((a) => a.status !== 200)) dead++;
  }
  const requests = await (await fetch(`${ehr}/_sandbox/requests`)).json();
  const presented = new Map();
  for (const e of requests)
    if (e.grant?.type === 'refresh_token' && e.grant.refreshTokenFingerprint)
      presented.set(e.grant.refreshTokenFingerprint, (presented.get(e.grant.refreshTokenFingerprint) ?? 0) + 1);
  const { accepted, firstAt, copies } = await peerRecords(ehr, payer);
  const ids = new Set(results.flatMap((r) => r.ids));
  const { rows } = await client.query(`SELECT id::text, state FROM submission`);
  const states = new Map(rows.map((r) => [r.id, r.state]));
  const verified = await client.query(
    `SELECT submission_id::text AS id, min(recorded_at) AS at FROM audit_event
     WHERE subtype_code = 'ehr-read-back' AND outcome = '0' AND submission_id IS NOT NULL GROUP BY 1`,
  );
  const verifiedAt = new Map(verified.rows.map((r) => [r.id, r.at.getTime()]));
  return {
    lostSessions: failures.length + dead,
    refreshes: [...presented.values()].reduce((a, b) => a + b, 0),
    duplicateRefreshes: [...presented.values()].filter((n) => n > 1).length,
    duplicateSubmissions:
      results.filter((r) => new Set(r.ids).size > 1).length +
      [...accepted.values()].filter((n) => n > 1).length +
      [...copies.values()].filter((n) => n > 1).length,
    delivered: [...ids].filter((id) => states.get(id) === 'delivered').length,
    undelivered: [...ids].filter((id) => states.get(id) !== 'delivered' && states.get(id) !== 'dead').length,
    early: [...firstAt].filter(([id, at]) => !verifiedAt.has(id) || at < verifiedAt.get(id)).length,
  };
}

function print(total, { results, failures, kills }, r, served) {
  const line = (label, value) => process.stdout.write(`${label.padEnd(56)} ${value}\n`);
  process.stdout.write('\nchaos:instances\n');
  line('sessions (launch → Send, two Sends at once)', `${total} (${results.length} reached Send)`);
  line('instance kills (SIGKILL, then restart)', kills);
  line('requests served by instance 0 / 1', `${served[0]} / ${served[1]}`);
  line('EHR token refreshes', r.refreshes);
  line('sessions lost', r.lostSessions);
  line('duplicate refreshes (a refresh token exchanged twice)', r.duplicateRefreshes);
  line('duplicate submissions', r.duplicateSubmissions);
  line('delivered to the payer', r.delivered);
  line('neither delivered nor dead letter after the drain', r.undelivered);
  line('sent before the EHR copy was verified', r.early);
  if (failures.length > 0)
    line('flows that failed', `${failures.length}: ${[...new Set(failures)].slice(0, 3).join(' | ')}`);
}

if (process.env.CHAOS_CHILD === 'serve') await serve();
else await main();
