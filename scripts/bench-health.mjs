#!/usr/bin/env node
// npm run bench:health — how responsive the server stays while it prefills. Starts the sandbox EHR and payer (one
// process, seeded with two generated heavy patients: 500 Conditions of 40 codings each, which the payer's library
// scans) and the DTR server (another process, built dist/), launches two sessions, and runs their prefills
// concurrently while GET /health/live is sampled every few milliseconds. Prints the latency of /health/live
// (p50/p99/max) and the prefill durations, once with the prefill worker pool and once with DTR_PREFILL_WORKERS=0
// (CQL in the request thread). Uses DATABASE_URL when set, else an embedded PostgreSQL in .data/bench-health.
// BENCH_ROUNDS (default 3) rounds of two concurrent prefills per mode; BENCH_SAMPLE_MS (default 5) between samples.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, oxygenOrderRecord, start, serveRegistered } from './lib/harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Child mode: the DTR server from dist/, registered with the sandbox peers named in the environment. */
const serve = () =>
  serveRegistered(
    {
      ehrFhirBase: process.env.BENCH_EHR_FHIR,
      payerFhirBase: process.env.BENCH_PAYER_FHIR,
      payerTokenEndpoint: process.env.BENCH_PAYER_TOKEN,
    },
    'bench server',
  );

const CONDITIONS = 500;
const CODINGS = 40;

/** Two patients with heavy Condition lists (one qualifying), their coverage with the sandbox payer and an oxygen order. */
function heavyBundle() {
  const entry = [];
  for (const n of [1, 2]) {
    const patient = `bench-heavy-${n}`;
    entry.push({
      resource: {
        resourceType: 'Patient',
        id: patient,
        birthDate: `194${n}-03-0${n}`,
        name: [{ family: 'Heavy', given: [`Bench${n}`] }],
      },
    });
    entry.push(...oxygenOrderRecord(patient).map((resource) => ({ resource })));
    for (let i = 0; i < CONDITIONS; i++) {
      const codes = Array.from({ length: CODINGS }, (_, k) => ({
        system: 'http://snomed.info/sct',
        code: String(100000 + i * CODINGS + k),
      }));
      if (i === CONDITIONS - 1) codes.push({ system: 'http://snomed.info/sct', code: '389087006' });
      entry.push({
        resource: {
          resourceType: 'Condition',
          id: `${patient}-c${i}`,
          subject: { reference: `Patient/${patient}` },
          code: { coding: codes },
        },
      });
    }
  }
  return { resourceType: 'Bundle', type: 'collection', entry };
}

/** A browser's cookies per host, and redirects followed by hand (the SMART launch crosses our server and the EHR). */
async function launch(serverUrl, ehrFhir, patient) {
  const ehrOrigin = new URL(ehrFhir).origin;
  const created = await fetch(`${ehrOrigin}/_sandbox/launches`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      patient,
      user: 'pr-1',
      fhirContext: [{ reference: `DeviceRequest/${patient}-order` }, { reference: `Coverage/${patient}-cov` }],
    }),
  });
  if (!created.ok) throw new Error(`the sandbox EHR refused the launch: ${created.status} ${await created.text()}`);
  const { launch: id } = await created.json();
  const jar = new Map();
  const cookieHeader = (host) => [...(jar.get(host) ?? new Map())].map(([k, v]) => `${k}=${v}`).join('; ');
  let url = `${serverUrl}/launch?iss=${encodeURIComponent(ehrFhir)}&launch=${id}`;
  for (let hop = 0; hop < 20; hop++) {
    const target = new URL(url);
    const response = await fetch(target, { redirect: 'manual', headers: { cookie: cookieHeader(target.host) } });
    for (const line of response.headers.getSetCookie()) {
      const pair = line.split(';')[0];
      const eq = pair.indexOf('=');
      if (!jar.has(target.host)) jar.set(target.host, new Map());
      jar.get(target.host).set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    await response.arrayBuffer();
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      url = new URL(location, target).toString();
      continue;
    }
    if (target.pathname !== '/app' || response.status !== 200)
      throw new Error(`the launch ended at ${target} (${response.status})`);
    return cookieHeader(new URL(serverUrl).host);
  }
  throw new Error('the launch did not reach the app');
}

async function prefill(serverUrl, cookie) {
  const t0 = performance.now();
  const response = await fetch(`${serverUrl}/api/session/questionnaires`, { method: 'POST', headers: { cookie } });
  const body = await response.json();
  const ms = performance.now() - t0;
  if (response.status !== 200)
    throw new Error(`prefill failed: ${response.status} ${JSON.stringify(body).slice(0, 500)}`);
  const qr = JSON.stringify(body.payers?.[0]?.questionnaires?.[0]?.questionnaireResponse ?? {});
  if (!qr.includes('"valueBoolean":true'))
    throw new Error(
      'the prefill did not find the qualifying condition: the measurement would not be of a real prefill',
    );
  return ms;
}

const quantile = (values, q) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function measure(workers, env, rounds, sampleMs) {
  // The sandbox registered our redirect URI with env.port: every server listens there.
  const server = start(
    [fileURLToPath(import.meta.url), '--serve'],
    {
      ...env.base,
      DTR_PORT: String(env.port),
      DTR_PREFILL_WORKERS: String(workers),
      DTR_LOG_LEVEL: 'warn',
      DTR_DATA_DIR: path.join(root, '.data', 'bench-health'),
      ...(process.env.DATABASE_URL ? { DATABASE_URL: process.env.DATABASE_URL } : {}),
    },
    /bench server ready: (http:\/\/\S+)/,
    'the DTR server',
  );
  try {
    const [, url] = await server.matched;
    const sessions = [];
    for (const patient of ['bench-heavy-1', 'bench-heavy-2'])
      sessions.push(await launch(url, env.base.BENCH_EHR_FHIR, patient));
    // Warm-up (package retrieval and caching, worker start, JIT), not measured.
    for (const cookie of sessions) await prefill(url, cookie);
    const health = [];
    const durations = [];
    for (let round = 0; round < rounds; round++) {
      let running = true;
      const sampler = (async () => {
        while (running) {
          const t0 = performance.now();
          const response = await fetch(`${url}/health/live`);
          await response.arrayBuffer();
          if (response.status !== 200) throw new Error(`/health/live answered ${response.status}`);
          health.push(performance.now() - t0);
          await sleep(sampleMs);
        }
      })();
      await sleep(50);
      durations.push(...(await Promise.all(sessions.map((cookie) => prefill(url, cookie)))));
      running = false;
      await sampler;
    }
    return { health, durations };
  } catch (error) {
    // What the server logged says why (its error entries carry the request id the answer quoted).
    process.stderr.write(`${server.output().slice(-3000)}\n`);
    throw error;
  } finally {
    server.child.kill('SIGTERM');
    await server.exited;
  }
}

async function main() {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const sampleMs = Number(process.env.BENCH_SAMPLE_MS ?? 5);
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-bench-health-'));
  const bundleFile = path.join(dir, 'heavy-patients.json');
  writeFileSync(bundleFile, JSON.stringify(heavyBundle()));
  const port = await freePort();
  const sandbox = start(
    ['dist/apps/sandbox/src/main.js'],
    {
      SANDBOX_EHR_PORT: '0',
      SANDBOX_PAYER_PORT: '0',
      // The second payer on a port of its own (its default, the payer's + 1, may be taken).
      SANDBOX_SECOND_PAYER_PORT: '0',
      SANDBOX_APP_URL: `http://127.0.0.1:${port}`,
      SANDBOX_BUNDLES: bundleFile,
    },
    /\(FHIR (http:\/\/\S+)\)[\s\S]*Sandbox payer: (http:\/\/\S+)\s+\(token (http:\/\/\S+)\)/,
    'the sandbox',
  );
  try {
    const [, ehrFhir, payerFhir, payerToken] = await sandbox.matched;
    const env = { port, base: { BENCH_EHR_FHIR: ehrFhir, BENCH_PAYER_FHIR: payerFhir, BENCH_PAYER_TOKEN: payerToken } };
    const pooled = Number(process.env.DTR_PREFILL_WORKERS || availableParallelism()) || availableParallelism();
    console.log(
      `bench:health: ${rounds} rounds of 2 concurrent prefills (${CONDITIONS} Conditions x ${CODINGS} codings per patient, sandbox EHR in its own process), GET /health/live every ${sampleMs} ms; ${availableParallelism()} cores`,
    );
    console.log('mode                      | health n | p50 ms | p99 ms | max ms | prefill p50 ms | prefill max ms');
    const rows = [];
    for (const [label, workers] of [
      [`pool (${pooled} workers)`, pooled],
      ['in-thread (0 workers)', 0],
    ]) {
      const { health, durations } = await measure(workers, env, rounds, sampleMs);
      const row = {
        label,
        n: health.length,
        p50: quantile(health, 0.5),
        p99: quantile(health, 0.99),
        max: Math.max(...health),
        prefill50: quantile(durations, 0.5),
        prefillMax: Math.max(...durations),
      };
      rows.push(row);
      console.log(
        `${label.padEnd(25)} | ${String(row.n).padStart(8)} | ${row.p50.toFixed(1).padStart(6)} | ${row.p99.toFixed(1).padStart(6)} | ${row.max.toFixed(1).padStart(6)} | ${row.prefill50.toFixed(0).padStart(14)} | ${row.prefillMax.toFixed(0).padStart(14)}`,
      );
    }
    const [pool, inline] = rows;
    console.log(
      `/health/live p99 while two prefills run: ${pool.p99.toFixed(1)} ms with the pool (target < 50 ms: ${pool.p99 < 50 ? 'met' : 'NOT met'}), ${inline.p99.toFixed(1)} ms in-thread`,
    );
  } finally {
    sandbox.child.kill('SIGTERM');
    await sandbox.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--serve') await serve();
else await main();
