#!/usr/bin/env node
// npm run canary — a run seeded with canaries, then every place they must not reach is searched.
// Secret canaries: our client secret at the EHR, our encryption and audit-hash keys, the admin token, and every
// access, refresh and id token and authorization code the sandbox EHR and payer issued during the run. PHI canaries:
// the patients' names, MRN, member id and a clinical note; and text planted in upstream error answers (what an EHR or
// payer might put in an OperationOutcome). The run: CANARY_CLINICIANS (default 6) clinicians from launch to Send, and
// the error paths (refused iss, unknown launch, forged callback, EHR and payer failing with planted text, bad bodies,
// unknown forms, no session, bad admin token).
// Searched: the server's log lines (at debug level), every response our server gave (headers and bodies; error
// bodies also for PHI), the audit trail (table and `GET /admin/audit`), and a dump of every table (secrets only:
// tokens and keys are sealed at rest). Prints, per place, what was scanned and canaries found; exits 1 on any find.
// Everything is ours, on 127.0.0.1: the sandbox in this process, the server in a child process (dist/).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { clinicianToSend, json } from './lib/clinician.mjs';
import { runDatabase } from './lib/database.mjs';
import { freePort, launch, oxygenOrderRecord, root, serveRegistered, start } from './lib/harness.mjs';

const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);
const tag = () => randomBytes(6).toString('hex');

/** Child mode: the DTR server from dist/, registered with the sandbox peers named in the environment. */
const serve = () =>
  serveRegistered(
    {
      ehrFhirBase: process.env.CANARY_EHR_FHIR,
      payerFhirBase: process.env.CANARY_PAYER_FHIR,
      payerTokenEndpoint: process.env.CANARY_PAYER_TOKEN,
    },
    'canary server',
  );

const PATIENTS = 3;

function canaryRecord(phi) {
  const entry = [{ resourceType: 'Practitioner', id: 'canary-pr', name: [{ family: 'Sentinel', given: ['Cy'] }] }];
  for (let n = 1; n <= PATIENTS; n++) {
    const id = `canary-${n}`;
    const [cov, order] = oxygenOrderRecord(id);
    entry.push(
      {
        resourceType: 'Patient',
        id,
        birthDate: '1950-01-01',
        identifier: [{ system: 'http://hospital.example/mrn', value: `${phi.mrn}${n}` }],
        name: [{ family: `${phi.family}${n}`, given: [`${phi.given}${n}`] }],
      },
      { ...cov, subscriberId: `${phi.member}${n}` },
      order,
      {
        resourceType: 'Condition',
        id: `${id}-cond`,
        code: { coding: [{ system: 'http://snomed.info/sct', code: '13645005' }] },
        subject: { reference: `Patient/${id}` },
        note: [{ text: `${phi.note}${n}` }],
      },
    );
  }
  return { resourceType: 'Bundle', type: 'collection', entry: entry.map((resource) => ({ resource })) };
}

/** Every response our server gives this process, headers and body, kept for the scan. */
function recordResponses(serverOrigin) {
  const responses = [];
  const original = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    const response = await original(input, init);
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    if (url.origin === serverOrigin) {
      const body = await response.clone().text();
      const headers = [...response.headers].map(([k, v]) => `${k}: ${v}`).join('\n');
      responses.push({ url: `${url.pathname}`, status: response.status, headers, body });
    }
    return response;
  };
  return responses;
}

async function errorPaths(serverUrl, ehrFhir, sandbox, planted) {
  const get = (p) => fetch(`${serverUrl}${p}`, { redirect: 'manual' }).then((r) => r.text());
  await get(`/launch?iss=${encodeURIComponent('https://ehr.invalid/fhir')}&launch=x`);
  await get(`/launch?iss=${encodeURIComponent(ehrFhir)}&launch=no-such-launch`);
  await get(`/callback?code=forged&state=forged`);
  await get(`/api/session`);
  await get(`/app/questionnaires/00000000-0000-0000-0000-000000000000`);
  await fetch(`${serverUrl}/admin/audit`, { headers: { authorization: 'Bearer wrong-token-value' } });
  // The EHR and then the payer fail with text of their own (which may name a patient): it must stay on our side.
  const patient = 'canary-1';
  const jar = await launch(serverUrl, ehrFhir, { patient, user: 'canary-pr', order: `DeviceRequest/${patient}-order` });
  for (const [peer, paths] of [
    [sandbox.ehr.peer, ['/fhir/Condition', '/fhir/Coverage']],
    [sandbox.payer.peer, ['/fhir/Questionnaire']],
  ]) {
    peer.faults.set({ failNext: 50, errorStatus: 500, paths, errorDiagnostics: planted });
    await json(`${serverUrl}/api/session/questionnaires`, jar, 'POST');
    const page = await fetch(`${serverUrl}/app/questionnaires`, {
      method: 'POST',
      headers: { cookie: jar.header(new URL(serverUrl).host), origin: serverUrl, 'sec-fetch-site': 'same-origin' },
    });
    await page.text();
    peer.faults.clear();
  }
  const prepared = await json(`${serverUrl}/api/session/questionnaires`, jar, 'POST');
  const form = `${serverUrl}/api/session/questionnaire-responses/${prepared.body?.payers?.[0]?.questionnaires?.[0]?.formId}`;
  await json(form, jar, 'PUT', { resourceType: 'Patient', id: '../x' });
  await json(form, jar, 'PUT', { resourceType: 'QuestionnaireResponse', status: 'bogus', item: 'x' });
  await json(`${serverUrl}/api/session/questionnaire-responses/not-a-form`, jar);
}

function scan(text, canaries) {
  const found = [];
  for (const [kind, values] of Object.entries(canaries))
    for (const value of values) {
      if (value.length < 8) continue;
      const forms = [value, encodeURIComponent(value), Buffer.from(value).toString('base64url')];
      if (forms.some((f) => text.includes(f))) found.push(`${kind} ${value.slice(0, 4)}…`);
    }
  return found;
}

async function main() {
  if (!process.env.CANARY_SKIP_BUILD)
    execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  const clinicians = Number(process.env.CANARY_CLINICIANS ?? 6);
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-canary-'));
  chmodSync(dir, 0o755);
  const db = await runDatabase(dir, 'canary');
  const [serverPort, ehrPort, payerPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const serverUrl = `http://127.0.0.1:${serverPort}`;
  const phi = {
    given: `Canarygiven${tag()}`,
    family: `Canaryfamily${tag()}`,
    mrn: `MRN${tag()}`,
    member: `MEMBER${tag()}`,
    note: `canary-note-${tag()}`,
  };
  const planted = `upstream-canary-${tag()} about patient ${phi.family}1`;
  const keys = {
    clientSecret: `canary-client-secret-${tag()}${tag()}`,
    encryption: randomBytes(32).toString('base64'),
    auditHash: randomBytes(32).toString('base64'),
    admin: `canary-admin-${tag()}${tag()}`,
  };
  const bundle = path.join(dir, 'patients.json');
  writeFileSync(bundle, JSON.stringify(canaryRecord(phi)));
  const { loadSandboxOptions } = await load('apps/sandbox/src/sandbox.config.js');
  const { startSandbox } = await load('apps/sandbox/src/sandbox.js');
  const sandbox = await startSandbox(
    loadSandboxOptions(
      {
        SANDBOX_EHR_PORT: String(ehrPort),
        SANDBOX_PAYER_PORT: String(payerPort),
        // The second payer on a port of its own (its default, the payer's + 1, may be taken).
        SANDBOX_SECOND_PAYER_PORT: '0',
        SANDBOX_APP_URL: serverUrl,
        SANDBOX_BUNDLES: bundle,
        SANDBOX_PATIENTS: '1',
        SANDBOX_APP_CLIENT_SECRET: keys.clientSecret,
      },
      [],
    ),
  );
  const server = start(
    [path.join(root, 'scripts', 'canary-scan.mjs')],
    {
      DATABASE_URL: db.url,
      DTR_PORT: String(serverPort),
      DTR_ENCRYPTION_KEYS: `canary:${keys.encryption}`,
      DTR_AUDIT_HASH_KEY: keys.auditHash,
      DTR_ADMIN_TOKEN: keys.admin,
      DTR_DATA_DIR: dir,
      DTR_LOG_LEVEL: 'debug',
      SANDBOX_APP_CLIENT_SECRET: keys.clientSecret,
      CANARY_EHR_FHIR: sandbox.ehr.fhirBase,
      CANARY_PAYER_FHIR: sandbox.payer.fhirBase,
      CANARY_PAYER_TOKEN: sandbox.payer.tokenEndpoint,
      CANARY_CHILD: 'serve',
    },
    /canary server ready/,
    'server',
  );
  await server.matched;
  const responses = recordResponses(new URL(serverUrl).origin);
  const failures = [];
  for (let n = 0; n < clinicians; n++) {
    const patient = `canary-${1 + (n % PATIENTS)}`;
    await clinicianToSend(serverUrl, sandbox.ehr.fhirBase, { patient, user: 'canary-pr', n }).catch((e) =>
      failures.push(e.message),
    );
  }
  await errorPaths(serverUrl, sandbox.ehr.fhirBase, sandbox, planted).catch((e) => failures.push(e.message));
  const audit = await fetch(`${serverUrl}/admin/audit?_count=1000`, {
    headers: { authorization: `Bearer ${keys.admin}` },
  });
  const auditApi = await audit.text();
  const tables = await dumpTables(db.url);
  server.child.kill('SIGTERM');
  await server.exited;
  await sandbox.close();
  await db.stop();
  rmSync(dir, { recursive: true, force: true });

  const secrets = {
    token: [...sandbox.ehr.auth.issuedSecrets(), ...sandbox.payer.server.issuedSecrets()],
    key: Object.values(keys),
  };
  const personal = { phi: Object.values(phi).flatMap((v) => [1, 2, 3].map((n) => `${v}${n}`)), upstream: [planted] };
  const errors = responses.filter((r) => r.status >= 400);
  const places = [
    ['server log lines', server.output().split('\n').length, scan(server.output(), { ...secrets, ...personal })],
    [
      'responses (headers and bodies)',
      responses.length,
      scan(responses.map((r) => `${r.headers}\n${r.body}`).join('\n'), secrets),
    ],
    [
      'error responses (also for PHI)',
      errors.length,
      scan(errors.map((r) => r.body).join('\n'), { ...secrets, ...personal }),
    ],
    [
      'audit trail (table and /admin/audit)',
      tables.audit.count,
      scan(`${tables.audit.text}\n${auditApi}`, { ...secrets, ...personal }),
    ],
    ['database tables (every row)', tables.all.count, scan(tables.all.text, secrets)],
  ];
  print(places, secrets, personal, clinicians, failures, audit.status);
  // Where planted upstream text surfaced (it is ours, not a secret): the lines, to find the path that carried it.
  for (const text of [server.output(), ...errors.map((r) => `${r.url} ${r.status} ${r.body}`)])
    for (const l of text.split('\n'))
      if (l.includes(planted)) process.stdout.write(`  upstream text in: ${l.slice(0, 300)}\n`);
  if (places.some(([, , found]) => found.length > 0) || failures.length > 0 || audit.status !== 200)
    process.exitCode = 1;
}

async function dumpTables(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows: tables } = await client.query(
      `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`,
    );
    let text = '';
    let count = 0;
    for (const { tablename } of tables) {
      const { rows } = await client.query(`SELECT row_to_json(t)::text AS j FROM "${tablename}" t`);
      count += rows.length;
      text += rows.map((r) => r.j).join('\n');
    }
    const audit = await client.query(`SELECT row_to_json(t)::text AS j FROM audit_event t`);
    return { all: { text, count }, audit: { text: audit.rows.map((r) => r.j).join('\n'), count: audit.rows.length } };
  } finally {
    await client.end();
  }
}

function print(places, secrets, personal, clinicians, failures, auditStatus) {
  const line = (label, scanned, found) =>
    process.stdout.write(`${label.padEnd(40)}${String(scanned).padStart(9)}  ${found}\n`);
  process.stdout.write('\ncanary scan\n');
  process.stdout.write(
    `canaries: ${secrets.token.length} tokens and codes, ${secrets.key.length} keys and secrets, ` +
      `${personal.phi.length} PHI values, ${personal.upstream.length} planted upstream text; ${clinicians} clinicians to Send\n`,
  );
  process.stdout.write(`${'place'.padEnd(40)}${'scanned'.padStart(9)}  canaries found\n`);
  for (const [label, scanned, found] of places)
    line(label, scanned, found.length === 0 ? 0 : `${found.length}: ${found.join(', ')}`);
  if (auditStatus !== 200) process.stdout.write(`GET /admin/audit answered ${auditStatus}\n`);
  for (const f of failures) process.stdout.write(`flow failed: ${f}\n`);
}

if (process.env.CANARY_CHILD === 'serve') await serve();
else await main();
