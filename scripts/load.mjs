#!/usr/bin/env node
// npm run load — the clinician's path under load, on 127.0.0.1 only: for 1, 10 and 50 concurrent sessions (LOAD_LEVELS),
// each worker repeats launch (EHR launch, hop by hop) → prepare (payer package + prefill) → save a draft, for
// LOAD_SECONDS (default 20) per level. Prints per step and level p50/p95/p99 latency (prepare includes waiting after
// a 503 with Retry-After, the prefill queue shedding load, counted as `shed`), the HTTP requests per second our
// server answered, failed flows, /health/live p99 sampled every 50 ms during the run, and the peak RSS of the server
// with its worker processes.
// Everything is ours: the sandbox EHR and payer (a child process), the DTR server (a child process, dist/), on
// DATABASE_URL when set (a scratch database on that server, dropped at the end) or an embedded PostgreSQL.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { json } from './lib/clinician.mjs';
import {
  freePort,
  launch,
  oxygenPatients,
  quantile,
  root,
  serveRegistered,
  start,
  startSandboxProcess,
} from './lib/harness.mjs';
import { runDatabase } from './lib/database.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PATIENTS = 50;

/** Child mode: the DTR server from dist/, registered with the sandbox peers named in the environment. */
const serve = () =>
  serveRegistered(
    {
      ehrFhirBase: process.env.LOAD_EHR_FHIR,
      payerFhirBase: process.env.LOAD_PAYER_FHIR,
      payerTokenEndpoint: process.env.LOAD_PAYER_TOKEN,
    },
    'load server',
  );

/**
 * Resident memory of a process and its descendants (the server and its payer-logic worker processes), from /proc
 * (Linux), in MiB; undefined elsewhere.
 */
function rssMiB(pid) {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    if (!kb) return undefined;
    const children = readdirSync(`/proc/${pid}/task`).flatMap((task) =>
      readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean),
    );
    return Number(kb) / 1024 + children.reduce((sum, child) => sum + (rssMiB(child) ?? 0), 0);
  } catch {
    return undefined;
  }
}

/**
 * One worker of `concurrency`: launch → prepare → save, again and again until `until`. Each worker keeps to its own
 * patients (those whose number is its index modulo `concurrency`): two clinicians saving the same patient's response
 * at once is a real conflict (the EHR's 412, shown to the second), not load.
 */
async function worker(serverUrl, ehrFhir, index, concurrency, until, stats) {
  const own = Math.floor(PATIENTS / concurrency);
  for (let round = 0; Date.now() < until; round++) {
    const patient = `load-${1 + index + concurrency * (round % own)}`;
    try {
      let t = performance.now();
      const jar = await launch(serverUrl, ehrFhir, {
        patient,
        user: 'load-pr',
        order: `DeviceRequest/${patient}-order`,
      });
      stats.launch.push(performance.now() - t);
      stats.requests += jar.requests.get(new URL(serverUrl).host) ?? 0;
      t = performance.now();
      let prepared = await json(`${serverUrl}/api/session/questionnaires`, jar, 'POST');
      stats.requests++;
      // Past the prefill queue's cap the server sheds load (503, Retry-After): a client waits and asks again.
      for (let retry = 0; prepared.status === 503 && retry < 5; retry++) {
        stats.shed++;
        await sleep(1000);
        prepared = await json(`${serverUrl}/api/session/questionnaires`, jar, 'POST');
        stats.requests++;
      }
      if (prepared.status !== 200) throw new Error(`prepare ${prepared.status}`);
      stats.prepare.push(performance.now() - t);
      const form = `${serverUrl}/api/session/questionnaire-responses/${prepared.body.payers[0].questionnaires[0].formId}`;
      const view = await json(form, jar);
      stats.requests++;
      if (view.status !== 200) throw new Error(`open ${view.status}`);
      t = performance.now();
      const saved = await json(form, jar, 'PUT', view.body.response);
      stats.requests++;
      if (saved.status !== 200) throw new Error(`save ${saved.status} ${JSON.stringify(saved.body).slice(0, 200)}`);
      stats.save.push(performance.now() - t);
      stats.flows++;
    } catch (error) {
      stats.failed++;
      stats.errors.add(error.message.slice(0, 160));
    }
  }
}

async function level(serverUrl, ehrFhir, concurrency, seconds, serverPid) {
  const stats = { launch: [], prepare: [], save: [], flows: 0, failed: 0, shed: 0, requests: 0, errors: new Set() };
  const health = [];
  let peak = 0;
  const started = Date.now();
  const until = started + seconds * 1000;
  const sampler = (async () => {
    while (Date.now() < until) {
      const t = performance.now();
      const r = await fetch(`${serverUrl}/health/live`).catch(() => undefined);
      if (r) {
        await r.arrayBuffer();
        health.push(performance.now() - t);
      }
      peak = Math.max(peak, rssMiB(serverPid) ?? 0);
      await sleep(50);
    }
  })();
  await Promise.all(
    Array.from({ length: concurrency }, (_, i) => worker(serverUrl, ehrFhir, i, concurrency, until, stats)),
  );
  await sampler;
  const elapsed = (Date.now() - started) / 1000;
  return { concurrency, stats, health, peak, rps: stats.requests / elapsed };
}

async function main() {
  if (!process.env.LOAD_SKIP_BUILD)
    execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  const levels = (process.env.LOAD_LEVELS ?? '1,10,50').split(',').map(Number);
  if (levels.some((n) => !Number.isInteger(n) || n < 1 || n > PATIENTS))
    throw new Error(`LOAD_LEVELS must be whole numbers from 1 to ${PATIENTS} (one patient per session at least)`);
  const seconds = Number(process.env.LOAD_SECONDS ?? 20);
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-load-'));
  chmodSync(dir, 0o755);
  const serverPort = await freePort();
  const db = await runDatabase(dir, 'load');
  const serverUrl = `http://127.0.0.1:${serverPort}`;
  const { sandbox, ehrFhir, payerFhir, payerToken } = await startSandboxProcess(
    dir,
    serverUrl,
    oxygenPatients('load', PATIENTS),
  );
  const server = start(
    [path.join(root, 'scripts', 'load.mjs')],
    {
      DATABASE_URL: db.url,
      DTR_PORT: String(serverPort),
      DTR_ENCRYPTION_KEYS: `load:${randomBytes(32).toString('base64')}`,
      DTR_DATA_DIR: dir,
      DTR_LOG_LEVEL: 'warn',
      // The load comes from one address: the per-address launch limit would be what is measured otherwise.
      DTR_LAUNCH_RATE_LIMIT: '100000',
      LOAD_EHR_FHIR: ehrFhir,
      LOAD_PAYER_FHIR: payerFhir,
      LOAD_PAYER_TOKEN: payerToken,
      LOAD_CHILD: 'serve',
    },
    /load server ready/,
    'server',
  );
  await server.matched;
  const results = [];
  for (const concurrency of levels) {
    process.stderr.write(`load: ${concurrency} concurrent sessions for ${seconds} s\n`);
    results.push(await level(serverUrl, ehrFhir, concurrency, seconds, server.child.pid));
  }
  server.child.kill('SIGTERM');
  sandbox.child.kill('SIGTERM');
  await Promise.all([server.exited, sandbox.exited]);
  await db.stop();
  rmSync(dir, { recursive: true, force: true });
  print(results, seconds);
  if (results.some((r) => r.stats.failed > 0)) process.exitCode = 1;
}

function print(results, seconds) {
  const ms = (values) =>
    values.length === 0 ? '-' : [0.5, 0.95, 0.99].map((q) => Math.round(quantile(values, q))).join(' / ');
  process.stdout.write(`\nload (${seconds} s per level; latencies p50 / p95 / p99 in ms)\n`);
  process.stdout.write(
    `${'sessions'.padEnd(9)}${'flows'.padStart(7)}${'failed'.padStart(8)}${'req/s'.padStart(8)}${'shed'.padStart(6)}  ${'launch'.padEnd(22)}${'prepare'.padEnd(22)}${'save'.padEnd(22)}${'/health/live p99'.padEnd(18)}peak RSS MiB\n`,
  );
  for (const r of results) {
    const s = r.stats;
    process.stdout.write(
      `${String(r.concurrency).padEnd(9)}${String(s.flows).padStart(7)}${String(s.failed).padStart(8)}${r.rps.toFixed(1).padStart(8)}${String(s.shed).padStart(6)}  ${ms(s.launch).padEnd(22)}${ms(s.prepare).padEnd(22)}${ms(s.save).padEnd(22)}${String(Math.round(quantile(r.health, 0.99))).padEnd(18)}${Math.round(r.peak)}\n`,
    );
    for (const e of s.errors) process.stdout.write(`  failed: ${e}\n`);
  }
}

if (process.env.LOAD_CHILD === 'serve') await serve();
else await main();
