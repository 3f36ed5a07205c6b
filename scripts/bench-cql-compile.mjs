#!/usr/bin/env node
// npm run bench:cql-compile — how responsive the server stays while it compiles a payer's CQL-only library. Starts
// the sandbox EHR and payer (one process; the payer serves a generated package whose Library ships only CQL, 2000
// defines) and the DTR server (another process, built dist/), launches a session and prepares it (the package is
// retrieved, its library translated to ELM in the translator's worker process, the questionnaire prefilled) while
// GET /health/live is sampled every few milliseconds. Prints the prepare duration and /health/live p50/p99/max, and
// for comparison how long the same translation holds the thread it runs on (what every request would wait for, were
// it compiled on the main thread). Uses DATABASE_URL when set, else an embedded PostgreSQL in .data/bench-cql-compile.
// BENCH_DEFINES (default 2000) defines; BENCH_SAMPLE_MS (default 5) between samples.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { freePort, launch, quantile, serveRegistered, start } from './lib/harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEFINES = Number(process.env.BENCH_DEFINES ?? 2000);
const ORDER_CODE = 'E0905';

/** CQL of DEFINES defines, each building on the one before, and a last one the questionnaire reads. */
function largeCql() {
  const lines = ["library LargePayerLogic version '1.0.0'", "using FHIR version '4.0.1'", 'context Patient'];
  lines.push('define "D0": 0');
  for (let i = 1; i < DEFINES; i++) lines.push(`define "D${i}": "D${i - 1}" + ${i % 7}`);
  return lines.join('\n');
}

/** The package folder the sandbox payer serves: the CQL-only Library, a questionnaire reading its last define, rules. */
function writePackage(dir, cql) {
  const write = (name, value) => writeFileSync(path.join(dir, name), JSON.stringify(value, null, 2));
  write('Library.json', {
    resourceType: 'Library',
    id: 'LargePayerLogic',
    url: 'http://example.org/dtr/Library/LargePayerLogic',
    version: '1.0.0',
    name: 'LargePayerLogic',
    status: 'active',
    type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/library-type', code: 'logic-library' }] },
    content: [{ contentType: 'text/cql', data: Buffer.from(cql).toString('base64') }],
  });
  write('Questionnaire.json', {
    resourceType: 'Questionnaire',
    id: 'large-payer-logic',
    url: 'http://example.org/dtr/Questionnaire/large-payer-logic',
    version: '1.0.0',
    status: 'active',
    extension: [
      {
        url: 'http://hl7.org/fhir/StructureDefinition/cqf-library',
        valueCanonical: 'http://example.org/dtr/Library/LargePayerLogic|1.0.0',
      },
    ],
    item: [
      {
        linkId: 'last',
        text: 'Last define',
        type: 'integer',
        extension: [
          {
            url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
            valueExpression: { language: 'text/cql', expression: `LargePayerLogic."D${DEFINES - 1}"` },
          },
        ],
      },
    ],
  });
  write('rules.json', {
    rules: [
      {
        description: 'large CQL-only library',
        codes: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: ORDER_CODE }],
        questionnaires: ['http://example.org/dtr/Questionnaire/large-payer-logic|1.0.0'],
      },
    ],
  });
}

function patientBundle(patient) {
  const resources = [
    { resourceType: 'Patient', id: patient, birthDate: '1950-01-01', name: [{ family: 'Bench', given: ['Cql'] }] },
    { resourceType: 'Practitioner', id: 'pr-1', name: [{ family: 'Ruiz' }] },
    {
      resourceType: 'Coverage',
      id: `${patient}-cov`,
      status: 'active',
      beneficiary: { reference: `Patient/${patient}` },
      payor: [{ identifier: { system: 'http://example.org/payer-id', value: 'SANDBOX-PAYER' } }],
    },
    {
      resourceType: 'DeviceRequest',
      id: `${patient}-order`,
      status: 'active',
      intent: 'order',
      subject: { reference: `Patient/${patient}` },
      codeCodeableConcept: {
        coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: ORDER_CODE }],
      },
    },
  ];
  return { resourceType: 'Bundle', type: 'collection', entry: resources.map((resource) => ({ resource })) };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One prepare of the session while /health/live is sampled; returns the samples and the prepare's duration. */
async function measure(url, jar, sampleMs) {
  const health = [];
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
  const t0 = performance.now();
  const host = new URL(url).host;
  const response = await fetch(`${url}/api/session/questionnaires`, {
    method: 'POST',
    headers: { cookie: jar.header(host) },
  });
  const body = await response.json();
  const ms = performance.now() - t0;
  running = false;
  await sampler;
  if (response.status !== 200) throw new Error(`prepare failed: ${response.status} ${JSON.stringify(body)}`);
  // Package issues are per payer (one payer here).
  const issues = JSON.stringify((body.payers ?? []).flatMap((p) => p.packageIssues ?? []));
  if (!issues.includes('compiled-from-cql'))
    throw new Error(
      `the library was not compiled by the server: the measurement would not be of a compile (${issues})`,
    );
  return { health, ms };
}

/** How long the translation holds the thread it runs on (here: this process's main thread), translator warm. */
async function inThreadMs(cql) {
  const { translateCql } = await import(pathToFileURL(path.join(root, 'dist/libs/fhir/src/index.js')).href);
  await translateCql("library Warm version '0'\nusing FHIR version '4.0.1'\ndefine X: 1");
  const t0 = performance.now();
  const { errors } = await translateCql(cql);
  if (errors.length > 0) throw new Error(`the generated CQL does not translate: ${errors[0]}`);
  return performance.now() - t0;
}

async function main() {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const sampleMs = Number(process.env.BENCH_SAMPLE_MS ?? 5);
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-bench-cql-'));
  const cql = largeCql();
  mkdirSync(path.join(dir, 'package'));
  writePackage(path.join(dir, 'package'), cql);
  writeFileSync(path.join(dir, 'patients.json'), JSON.stringify(patientBundle('bench-cql-1')));
  const port = await freePort();
  const sandbox = start(
    ['dist/apps/sandbox/src/main.js'],
    {
      SANDBOX_EHR_PORT: '0',
      SANDBOX_PAYER_PORT: '0',
      // The second payer on a port of its own (its default, the payer's + 1, may be taken).
      SANDBOX_SECOND_PAYER_PORT: '0',
      SANDBOX_APP_URL: `http://127.0.0.1:${port}`,
      SANDBOX_BUNDLES: path.join(dir, 'patients.json'),
      SANDBOX_PACKAGE_DIRS: path.join(dir, 'package'),
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
        DTR_DATA_DIR: path.join(root, '.data', 'bench-cql-compile'),
        ...(process.env.DATABASE_URL ? { DATABASE_URL: process.env.DATABASE_URL } : {}),
      },
      /bench server ready: (http:\/\/\S+)/,
      'the DTR server',
    );
    const [, url] = await server.matched;
    const jar = await launch(url, ehrFhir, {
      patient: 'bench-cql-1',
      user: 'pr-1',
      order: 'DeviceRequest/bench-cql-1-order',
    });
    console.log(
      `bench:cql-compile: one prepare of a package whose library ships ${DEFINES} defines as CQL only (${Buffer.byteLength(cql)} bytes), GET /health/live every ${sampleMs} ms; ${availableParallelism()} cores`,
    );
    const { health, ms } = await measure(url, jar, sampleMs);
    console.log(`prepare (retrieve, compile in the translator's process, prefill): ${ms.toFixed(0)} ms`);
    console.log(
      `/health/live meanwhile: n ${health.length}, p50 ${quantile(health, 0.5).toFixed(1)} ms, p99 ${quantile(health, 0.99).toFixed(1)} ms, max ${Math.max(...health).toFixed(1)} ms`,
    );
    console.log(
      `the same translation on a thread (here, this process's): holds it ${(await inThreadMs(cql)).toFixed(0)} ms without a break`,
    );
  } catch (error) {
    if (server) process.stderr.write(`${server.output().slice(-3000)}\n`);
    throw error;
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

if (process.argv[2] === '--serve')
  await serveRegistered(
    {
      ehrFhirBase: process.env.BENCH_EHR_FHIR,
      payerFhirBase: process.env.BENCH_PAYER_FHIR,
      payerTokenEndpoint: process.env.BENCH_PAYER_TOKEN,
    },
    'bench server',
  );
else await main();
