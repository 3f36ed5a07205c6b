#!/usr/bin/env node
// npm run fuzz — fast-check generated hostile inputs, FUZZ_CASES in all (default 100000; FUZZ_SEED to reproduce):
//   - 80% against every public route of a server of our own on 127.0.0.1 (launch and callback parameters, session
//     pages and APIs with a live session, admin APIs with the admin token, bodies valid, malformed, deep, with
//     prototype keys), FUZZ_CONCURRENCY (default 8) at a time;
//   - 10% package files for `dtr package check` (mutations of our home-oxygen package), and 10% patient bundles for
//     `dtr prefill` (mutations of a patient record), each run by the code the CLI runs, in a worker thread watched by
//     the clock (FUZZ_CASE_TIMEOUT_MS, default 10000).
// Prints per target: cases, 5xx answers (a 503 with Retry-After is load shedding, not counted), crashes (the server
// process died, or a programming error escaped the CLI code), hangs (no answer in time), and the distinct failures.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { json } from './lib/clinician.mjs';
import { runDatabase } from './lib/database.mjs';
import { hostileBodyText, hostileString, mutationOf } from './lib/fuzz-inputs.mjs';
import { freePort, launch, oxygenOrderRecord, root, serveRegistered, start } from './lib/harness.mjs';

const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);

/** Child mode: the DTR server from dist/, registered with the sandbox peers named in the environment. */
const serve = () =>
  serveRegistered(
    {
      ehrFhirBase: process.env.FUZZ_EHR_FHIR,
      payerFhirBase: process.env.FUZZ_PAYER_FHIR,
      payerTokenEndpoint: process.env.FUZZ_PAYER_TOKEN,
    },
    'fuzz server',
  );

const ADMIN = `fuzz-admin-${randomBytes(16).toString('hex')}`;
// Method, path (`{id}` is a form, submission or registration id: a real one or a hostile one), query names, body.
const ROUTES = [
  ['GET', '/launch', ['iss', 'launch', 'aud']],
  ['GET', '/launch/standalone', ['iss', 'tenant']],
  ['GET', '/callback', ['code', 'state', 'iss', 'error', 'error_description']],
  ['GET', '/disclose/authorize', []],
  ['POST', '/disclose/authorize', [], true],
  ['GET', '/app', ['disclose']],
  ['POST', '/app/questionnaires', [], true],
  ['GET', '/app/questionnaires/{id}', []],
  ['GET', '/app/questionnaire-responses/{id}/send', []],
  ['POST', '/app/questionnaire-responses/{id}/send', [], true],
  ['GET', '/app/submissions', []],
  ['GET', '/app/submissions/{id}', []],
  ['GET', '/api/session', []],
  ['GET', '/api/session/questionnaire-responses', []],
  ['GET', '/api/session/questionnaire-responses/{id}', []],
  ['PUT', '/api/session/questionnaire-responses/{id}', [], true],
  ['POST', '/api/session/questionnaire-responses/{id}/$complete', [], true],
  ['GET', '/api/session/questionnaire-responses/{id}/disclosure', []],
  ['POST', '/api/session/questionnaire-responses/{id}/$send', [], true],
  ['GET', '/api/session/submissions', []],
  ['GET', '/api/session/submissions/{id}', []],
  ['GET', '/api/payers', []],
  ['GET', '/admin/tenants', []],
  ['GET', '/admin/tenants/{id}', []],
  ['PUT', '/admin/tenants/{id}', [], true],
  ['DELETE', '/admin/tenants/{id}', []],
  ['GET', '/admin/payers', []],
  ['PUT', '/admin/payers/{id}', [], true],
  ['DELETE', '/admin/payers/{id}', []],
  ['GET', '/admin/audit', ['patient', 'session', 'submission', 'from', 'to', '_count', 'after']],
  ['GET', '/health/live', []],
  ['GET', '/health/ready', []],
  ['GET', '/.well-known/jwks.json', []],
  ['GET', '/{id}', []],
];
const CONTENT_TYPES = [
  'application/json',
  'application/fhir+json',
  'application/x-www-form-urlencoded',
  'text/plain',
  'multipart/form-data; boundary=x',
  'application/json; charset=utf-16',
];

/** A request: route, ids, query values, body, content type, and which credentials (session, admin, none, forged). */
const requestCase = fc.record({
  route: fc.nat({ max: ROUTES.length - 1 }),
  realId: fc.boolean(),
  id: hostileString,
  query: fc.array(hostileString, { minLength: 7, maxLength: 7 }),
  omit: fc.array(fc.boolean(), { minLength: 7, maxLength: 7 }),
  body: hostileBodyText,
  contentType: fc.constantFrom(...CONTENT_TYPES),
  credentials: fc.constantFrom('session', 'session', 'session', 'admin', 'none', 'forged'),
  foreignOrigin: fc.boolean(),
});

function toRequest(c, ctx) {
  const [method, template, names, hasBody] = ROUTES[c.route];
  const id =
    c.realId && ctx.ids.length > 0 ? ctx.ids[c.id.length % ctx.ids.length] : encodeURIComponent(c.id.toWellFormed());
  const url = new URL(`${ctx.serverUrl}${template.replace('{id}', id)}`);
  names.forEach((name, i) => {
    if (!c.omit[i]) url.searchParams.set(name, c.query[i]);
  });
  const headers = {};
  if (c.credentials === 'session') headers.cookie = ctx.jar.header(url.host);
  if (c.credentials === 'admin') headers.authorization = `Bearer ${ADMIN}`;
  if (c.credentials === 'forged')
    headers.cookie = `dtr_session=${encodeURIComponent(c.query[0].toWellFormed()).slice(0, 4000)}`;
  if (method !== 'GET') {
    headers.origin = c.foreignOrigin ? 'https://attacker.example' : ctx.serverUrl;
    headers['sec-fetch-site'] = c.foreignOrigin ? 'cross-site' : 'same-origin';
  }
  if (hasBody) headers['content-type'] = c.contentType;
  return { url, init: { method, headers, redirect: 'manual', ...(hasBody ? { body: c.body } : {}) } };
}

async function fuzzRoutes(total, ctx, stats) {
  const concurrency = Number(process.env.FUZZ_CONCURRENCY ?? 8);
  const timeoutMs = Number(process.env.FUZZ_CASE_TIMEOUT_MS ?? 10_000);
  const batch = 500;
  for (let done = 0, round = 0; done < total; round++) {
    const cases = fc.sample(requestCase, { numRuns: Math.min(batch, total - done), seed: ctx.seed + round });
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < cases.length) {
          const c = cases[next++];
          await oneRequest(c, ctx, stats, timeoutMs);
        }
      }),
    );
    done += cases.length;
    await ctx.keepAlive();
    if (round % 20 === 0) process.stderr.write(`fuzz: routes ${done}/${total}\n`);
  }
}

async function oneRequest(c, ctx, stats, timeoutMs) {
  const { url, init } = toRequest(c, ctx);
  stats.cases++;
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
    const text = await response.text();
    if (response.status >= 500 && !(response.status === 503 && response.headers.get('retry-after'))) {
      stats.fiveXx++;
      stats.failures.set(`${init.method} ${ROUTES[c.route][1]} → ${response.status} ${text.slice(0, 160)}`, c);
    } else if (response.status >= 400) stats.refused++;
    else stats.ok++;
  } catch (error) {
    if (error.name === 'TimeoutError') {
      stats.hangs++;
      stats.failures.set(`${init.method} ${ROUTES[c.route][1]} → no answer in ${timeoutMs} ms`, c);
    } else if (!(await ctx.alive())) {
      stats.crashes++;
      stats.failures.set(`${init.method} ${ROUTES[c.route][1]} → the server process died`, c);
      await ctx.restart();
    } else if (error instanceof TypeError && /header|Request/i.test(String(error.message))) {
      // The client refused to send it (an invalid header value): not a case.
      stats.cases--;
    } else stats.refused++; // the server closed the connection on a bad request
  }
}

/** Package files and patient bundles, through the CLI's code in a watched worker. */
async function fuzzOffline(kind, arbitrary, total, seed, stats, workerData) {
  const timeoutMs = Number(process.env.FUZZ_CASE_TIMEOUT_MS ?? 10_000);
  let worker;
  const fresh = async () => {
    await worker?.terminate();
    worker = new Worker(new URL('./lib/fuzz-worker.mjs', import.meta.url), { workerData });
    await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
  };
  await fresh();
  const batch = 200;
  for (let done = 0, round = 0; done < total; round++) {
    const inputs = fc.sample(arbitrary, { numRuns: Math.min(batch, total - done), seed: seed + round });
    for (const input of inputs) {
      stats.cases++;
      const answer = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ outcome: 'hang' }), timeoutMs);
        worker.once('message', (m) => (clearTimeout(timer), resolve(m)));
        worker.once('error', (e) => (clearTimeout(timer), resolve({ outcome: 'crash', message: String(e) })));
        worker.postMessage({ kind, input });
      });
      if (answer.outcome === 'ok') stats.ok++;
      else if (answer.outcome === 'refused') stats.refused++;
      else {
        stats[answer.outcome === 'hang' ? 'hangs' : 'crashes']++;
        stats.failures.set(`${kind}: ${answer.outcome} ${answer.message ?? ''} ${answer.stack ?? ''}`, input);
        worker.removeAllListeners();
        await fresh();
      }
      worker.removeAllListeners('message');
      worker.removeAllListeners('error');
    }
    done += inputs.length;
  }
  await worker.terminate();
}

const newStats = () => ({ cases: 0, ok: 0, refused: 0, fiveXx: 0, crashes: 0, hangs: 0, failures: new Map() });

async function main() {
  if (!process.env.FUZZ_SKIP_BUILD)
    execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  const total = Number(process.env.FUZZ_CASES ?? 100_000);
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-fuzz-'));
  chmodSync(dir, 0o755);
  const db = await runDatabase(dir, 'fuzz');
  const { ctx, stop } = await startPeers(dir, db, seed);
  const routes = newStats();
  await fuzzRoutes(Math.round(total * 0.8), ctx, routes);
  await stop();
  const { loadPackageFromPath, resourcesOf } = await load('libs/payer/src/index.js');
  const fixture = loadPackageFromPath(
    path.join(root, 'apps', 'sandbox', 'fixtures', 'packages', 'home-oxygen-example'),
  );
  const packageBundle = {
    resourceType: 'Bundle',
    type: 'collection',
    entry: resourcesOf(fixture).map((resource) => ({ resource })),
  };
  const workerData = { root, prefillPackage: packageBundle };
  const packages = newStats();
  await fuzzOffline('package', mutationOf(packageBundle), Math.round(total * 0.1), seed, packages, workerData);
  const bundles = newStats();
  const record = patientRecord();
  await fuzzOffline('prefill', mutationOf(record), total - routes.cases - packages.cases, seed, bundles, workerData);
  await db.stop();
  rmSync(dir, { recursive: true, force: true });
  print(seed, [
    ['HTTP routes', routes],
    ['dtr package check (package files)', packages],
    ['dtr prefill (patient bundles)', bundles],
  ]);
  if ([routes, packages, bundles].some((s) => s.fiveXx + s.crashes + s.hangs > 0)) process.exitCode = 1;
}

function patientRecord() {
  const id = 'fuzz-1';
  const entry = [
    { resourceType: 'Patient', id, birthDate: '1950-01-01', name: [{ family: 'Fuzz', given: ['F'] }] },
    ...oxygenOrderRecord(id),
    {
      resourceType: 'Condition',
      id: `${id}-cond`,
      code: { coding: [{ system: 'http://snomed.info/sct', code: '389087006' }] },
      subject: { reference: `Patient/${id}` },
    },
    {
      resourceType: 'Observation',
      id: `${id}-spo2`,
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '59408-5' }] },
      subject: { reference: `Patient/${id}` },
      effectiveDateTime: '2026-11-01',
      valueQuantity: { value: 86, unit: '%', system: 'http://unitsofmeasure.org', code: '%' },
    },
  ];
  return { resourceType: 'Bundle', type: 'collection', entry: entry.map((resource) => ({ resource })) };
}

/** The sandbox and the server (child processes), a live session with a prepared form, and the means to restart. */
async function startPeers(dir, db, seed) {
  const [serverPort, ehrPort, payerPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const serverUrl = `http://127.0.0.1:${serverPort}`;
  const bundle = path.join(dir, 'patients.json');
  const record = patientRecord();
  record.entry.push({ resource: { resourceType: 'Practitioner', id: 'fuzz-pr', name: [{ family: 'Fuzz' }] } });
  writeFileSync(bundle, JSON.stringify(record));
  const sandbox = start(
    ['dist/apps/sandbox/src/main.js'],
    {
      SANDBOX_EHR_PORT: String(ehrPort),
      SANDBOX_PAYER_PORT: String(payerPort),
      // The second payer on a port of its own (its default, the payer's + 1, may be taken).
      SANDBOX_SECOND_PAYER_PORT: '0',
      SANDBOX_APP_URL: serverUrl,
      SANDBOX_BUNDLES: bundle,
      SANDBOX_PATIENTS: '1',
    },
    /Sandbox payer: (http:\S+)\s+\(token (http:\S+)\)/,
    'sandbox',
  );
  const [, payerFhir, payerToken] = await sandbox.matched;
  const ehrFhir = /FHIR (http:\S+)\)/.exec(sandbox.output())[1];
  const env = {
    DATABASE_URL: db.url,
    DTR_PORT: String(serverPort),
    DTR_ENCRYPTION_KEYS: `fuzz:${randomBytes(32).toString('base64')}`,
    DTR_ADMIN_TOKEN: ADMIN,
    DTR_DATA_DIR: dir,
    DTR_LOG_LEVEL: 'error',
    DTR_LAUNCH_RATE_LIMIT: '1000000',
    FUZZ_EHR_FHIR: ehrFhir,
    FUZZ_PAYER_FHIR: payerFhir,
    FUZZ_PAYER_TOKEN: payerToken,
    FUZZ_CHILD: 'serve',
  };
  let server;
  const ctx = { serverUrl, seed, ids: [], jar: undefined };
  const session = async () => {
    ctx.jar = await launch(serverUrl, ehrFhir, {
      patient: 'fuzz-1',
      user: 'fuzz-pr',
      order: 'DeviceRequest/fuzz-1-order',
    });
    const prepared = await json(`${serverUrl}/api/session/questionnaires`, ctx.jar, 'POST');
    ctx.ids = [
      ...new Set([...ctx.ids, ...(prepared.body?.payers ?? []).flatMap((p) => p.questionnaires).map((q) => q.formId)]),
    ];
  };
  ctx.restart = async () => {
    server = start([path.join(root, 'scripts', 'fuzz.mjs')], env, /fuzz server ready/, 'server');
    await server.matched;
    await session();
  };
  ctx.alive = async () => server.child.exitCode === null && server.child.signalCode === null;
  ctx.keepAlive = async () => {
    const answer = await json(`${serverUrl}/api/session`, ctx.jar).catch(() => ({ status: 0 }));
    if (answer.status !== 200) await session();
  };
  await ctx.restart();
  return {
    ctx,
    stop: async () => {
      server.child.kill('SIGTERM');
      sandbox.child.kill('SIGTERM');
      await Promise.all([server.exited, sandbox.exited]);
    },
  };
}

function print(seed, targets) {
  process.stdout.write(`\nfuzz (seed ${seed})\n`);
  const cols = ['cases', '5xx', 'crashes', 'hangs', 'refused', 'accepted'];
  process.stdout.write(`${'target'.padEnd(36)}${cols.map((c) => c.padStart(10)).join('')}\n`);
  for (const [label, s] of targets)
    process.stdout.write(
      `${label.padEnd(36)}${[s.cases, s.fiveXx, s.crashes, s.hangs, s.refused, s.ok].map((v) => String(v).padStart(10)).join('')}\n`,
    );
  const all = targets.reduce((n, [, s]) => n + s.cases, 0);
  process.stdout.write(`${'total cases'.padEnd(36)}${String(all).padStart(10)}\n`);
  for (const [, s] of targets)
    for (const [failure, input] of [...s.failures].slice(0, 10))
      process.stdout.write(`  ${failure}\n    input: ${JSON.stringify(input)?.slice(0, 300)}\n`);
}

if (process.env.FUZZ_CHILD === 'serve') await serve();
else await main();
