#!/usr/bin/env node
// npm run bench:form — form completion over real HTTP. Starts the sandbox EHR and payer (one process, seeded with
// bench patients: coverage with the sandbox payer and a home-oxygen order each) and the DTR server (another process,
// built dist/), then per session: EHR launch → package + prefill → form served ("form ready"), draft saves (each
// validated, recomputed and written to the sandbox EHR with If-Match), $complete. Once with sessions one after the
// other and once with BENCH_CONCURRENCY (default 20) sessions at the same time. Prints p50/p95 of each step and the
// server's resident memory per open session (VmRSS of the server process before and after the concurrent sessions
// opened their forms). Uses DATABASE_URL when set, else an embedded PostgreSQL in .data/bench-form.
// BENCH_SESSIONS (default 10) sequential sessions; BENCH_SAVES (default 3) draft saves per session.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  freePort,
  launch as launchSession,
  oxygenOrderRecord,
  quantile,
  start,
  serveRegistered,
} from './lib/harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DELIVERY = { system: 'http://example.org/dtr/CodeSystem/oxygen-delivery', code: 'concentrator' };

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

/** Patients with an active coverage with the sandbox payer and a stationary-oxygen order (the home-oxygen package). */
function benchBundle(count) {
  const entry = [{ resourceType: 'Practitioner', id: 'bench-pr', name: [{ family: 'Bench', given: ['Pat'] }] }];
  for (let n = 1; n <= count; n++) {
    const patient = `bench-form-${n}`;
    entry.push(
      { resourceType: 'Patient', id: patient, birthDate: '1950-01-01', name: [{ family: 'Form', given: [`B${n}`] }] },
      ...oxygenOrderRecord(patient),
    );
  }
  return { resourceType: 'Bundle', type: 'collection', entry: entry.map((resource) => ({ resource })) };
}

async function call(url, cookie, method = 'GET', body) {
  const response = await fetch(url, {
    method,
    headers: { cookie, ...(body ? { 'content-type': 'application/fhir+json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const json = await response.json();
  if (response.status !== 200)
    throw new Error(`${method} ${url} answered ${response.status}: ${JSON.stringify(json).slice(0, 400)}`);
  return json;
}

function withAnswer(qr, linkId, answer) {
  const copy = structuredClone(qr);
  copy.item = [...(copy.item ?? []).filter((i) => i.linkId !== linkId), { linkId, answer }];
  return copy;
}

/** One clinician: launch → form ready, `saves` draft saves, complete. Returns each step's duration (ms). */
async function session(serverUrl, ehrFhir, patient, saves, onOpen) {
  const t0 = performance.now();
  const jar = await launchSession(serverUrl, ehrFhir, {
    patient,
    user: 'bench-pr',
    order: `DeviceRequest/${patient}-order`,
  });
  const cookie = jar.header(new URL(serverUrl).host);
  const prepared = await call(`${serverUrl}/api/session/questionnaires`, cookie, 'POST');
  const form = `${serverUrl}/api/session/questionnaire-responses/${prepared.payers[0].questionnaires[0].formId}`;
  let view = await call(form, cookie);
  const ready = performance.now() - t0;
  if (!JSON.stringify(view.response).includes('valueDate')) throw new Error('the form was served without its prefill');
  await onOpen?.();
  const saveMs = [];
  for (let i = 0; i < saves; i++) {
    const t = performance.now();
    view = await call(form, cookie, 'PUT', withAnswer(view.response, 'flow-rate', [{ valueInteger: 2 + i }]));
    saveMs.push(performance.now() - t);
    if (!view.ehr?.id) throw new Error('a draft save did not reach the EHR');
  }
  const t = performance.now();
  const done = await call(
    `${form}/$complete`,
    cookie,
    'POST',
    withAnswer(view.response, 'delivery-system', [{ valueCoding: DELIVERY }]),
  );
  const completeMs = performance.now() - t;
  if (done.status !== 'completed') throw new Error(`complete answered status ${done.status}`);
  return { ready, saveMs, completeMs };
}

const rssMb = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

async function main() {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const sequential = Number(process.env.BENCH_SESSIONS ?? 10);
  const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);
  const saves = Number(process.env.BENCH_SAVES ?? 3);
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-bench-form-'));
  const bundleFile = path.join(dir, 'patients.json');
  writeFileSync(bundleFile, JSON.stringify(benchBundle(1 + sequential + concurrency)));
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
  let server;
  try {
    const [, ehrFhir, payerFhir, payerToken] = await sandbox.matched;
    server = start(
      [fileURLToPath(import.meta.url), '--serve'],
      {
        BENCH_EHR_FHIR: ehrFhir,
        BENCH_PAYER_FHIR: payerFhir,
        BENCH_PAYER_TOKEN: payerToken,
        DTR_PORT: String(port),
        DTR_LOG_LEVEL: 'warn',
        DTR_DATA_DIR: path.join(root, '.data', 'bench-form'),
        ...(process.env.DATABASE_URL ? { DATABASE_URL: process.env.DATABASE_URL } : {}),
        ...(process.env.DTR_PREFILL_WORKERS ? { DTR_PREFILL_WORKERS: process.env.DTR_PREFILL_WORKERS } : {}),
      },
      /bench server ready: (http:\/\/\S+)/,
      'the DTR server',
    );
    const [, url] = await server.matched;
    console.log(
      `bench:form: home-oxygen package, sandbox EHR and payer in their own process; ${saves} draft saves per session; ${availableParallelism()} cores`,
    );
    // Warm-up (package retrieval and cache, JIT), not measured.
    await session(url, ehrFhir, 'bench-form-1', 1);
    let next = 2;
    const rows = [];
    const seq = [];
    for (let i = 0; i < sequential; i++) seq.push(await session(url, ehrFhir, `bench-form-${next++}`, saves));
    rows.push(['1 session at a time', seq]);

    const before = rssMb(server.child.pid);
    let opened = 0;
    let allOpen;
    const everyoneOpen = new Promise((resolve) => (allOpen = resolve));
    let rssOpen = before;
    const onOpen = async () => {
      opened++;
      if (opened === concurrency) {
        rssOpen = rssMb(server.child.pid);
        allOpen();
      }
      await everyoneOpen;
    };
    const patients = Array.from({ length: concurrency }, () => `bench-form-${next++}`);
    const par = await Promise.all(patients.map((p) => session(url, ehrFhir, p, saves, onOpen)));
    rows.push([`${concurrency} sessions at once`, par]);

    console.log('sessions                | n  | form ready p50/p95 ms | draft save p50/p95 ms | complete p50/p95 ms');
    for (const [label, results] of rows) {
      const ready = results.map((r) => r.ready);
      const save = results.flatMap((r) => r.saveMs);
      const complete = results.map((r) => r.completeMs);
      const pair = (v) => `${quantile(v, 0.5).toFixed(0)} / ${quantile(v, 0.95).toFixed(0)}`;
      console.log(
        `${label.padEnd(23)} | ${String(results.length).padStart(2)} | ${pair(ready).padStart(21)} | ${pair(save).padStart(21)} | ${pair(complete).padStart(19)}`,
      );
    }
    console.log(
      `server RSS: ${before.toFixed(0)} MB before, ${rssOpen.toFixed(0)} MB with ${concurrency} forms open at once: ${((rssOpen - before) / concurrency).toFixed(2)} MB per open session`,
    );
  } finally {
    if (server) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
    sandbox.child.kill('SIGTERM');
    await sandbox.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--serve') await serve();
else await main();
