#!/usr/bin/env node
// npm run bench:package — what a session costs on the server's main thread before any patient data is read: getting
// the payer's questionnaire package (the $questionnaire-package call with changedsince, the cache in PostgreSQL, the
// package object the engine resolves against, validation) and the first prefill of it, for a payer whose cache also
// holds many other packages. The sandbox payer runs in this process over real HTTP with a Backend Services token;
// its content is our fixture packages plus BENCH_PACKAGES (default 20) renamed copies of them, generated in a
// temporary folder. Prints, over BENCH_SESSIONS (default 30) warm sessions for the SDC feature example order:
// retrieval median/p95, how many distinct package objects the sessions got (each new one is hashed and sent to the
// prefill workers, and prepared again), the cost of that hand-off hash, and the warm in-thread prefill median.
// Works in a database of its own, created on the server of DATABASE_URL when set (else an embedded PostgreSQL in
// .data/bench-package) and dropped at the end.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);
const { SystemClock } = await load('libs/kernel/src/index.js');
const { createDataSource, migrate, EmbeddedPostgresSupervisor } = await load('libs/persistence/src/index.js');
const { PackageCache, PackageRetrieval, PayerClient, PayerRegistry } = await load('libs/payer/src/index.js');
const { BackendServicesClient, KeyRingSecretBox, SigningKeyStore } = await load('libs/smart/src/index.js');
const { BundleReader, PrefillEngine } = await load('libs/prefill/src/index.js');
const { createPayerServer, FIXTURE_PACKAGES_DIR } = await load('apps/sandbox/src/payer/index.js');
const { startPeerServer } = await load('apps/sandbox/src/shared/peer-server.js');

const copies = Number(process.env.BENCH_PACKAGES ?? 20);
const sessions = Number(process.env.BENCH_SESSIONS ?? 30);
if (!Number.isInteger(copies) || copies < 0 || !Number.isInteger(sessions) || sessions < 1) {
  console.error('bench:package: BENCH_PACKAGES must be a whole number ≥ 0 and BENCH_SESSIONS ≥ 1');
  process.exit(2);
}

// Other packages of the same payer: our fixtures with every canonical renamed, so each copy is distinct content.
const extra = mkdtempSync(path.join(tmpdir(), 'dtr-bench-package-'));
let extraBytes = 0;
for (let k = 1; k <= copies; k++) {
  for (const name of ['home-oxygen-example', 'sdc-features-example']) {
    const dir = path.join(extra, `${name}-${k}`);
    cpSync(path.join(FIXTURE_PACKAGES_DIR, name), dir, { recursive: true });
    for (const file of readdirSync(dir)) {
      const text = readFileSync(path.join(dir, file), 'utf8')
        .replaceAll('http://example.org/dtr/', `http://example.org/dtr/copy-${k}/`)
        .replace(/"code": "(E\d{4}|\d+)"/g, `"code": "BENCH-${k}-$1"`);
      writeFileSync(path.join(dir, file), text);
      extraBytes += text.length;
    }
  }
}

// A database of this run's own (its keys are sealed with this run's random key), dropped at the end.
let embedded;
let adminUrl = process.env.DATABASE_URL;
if (!adminUrl) {
  embedded = await EmbeddedPostgresSupervisor.start({
    dataDir: path.join(root, '.data', 'bench-package'),
    database: 'dtr',
  });
  adminUrl = embedded.url;
}
const scratch = `dtr_bench_package_${randomBytes(4).toString('hex')}`;
const adminQuery = async (sql) => {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
};
await adminQuery(`CREATE DATABASE ${scratch}`);
const scratchUrl = new URL(adminUrl);
scratchUrl.pathname = `/${scratch}`;
const url = scratchUrl.toString();
const closers = [];
try {
  await migrate(url);
  const dataSource = createDataSource({ url });
  await dataSource.initialize();
  closers.push(() => dataSource.destroy());
  const clock = new SystemClock();
  const keys = new SigningKeyStore(dataSource, new KeyRingSecretBox(new Map([['bench', randomBytes(32)]])), clock);
  await keys.ensureKeys();
  const jwks = createServer(
    (_req, res) =>
      void keys
        .publicJwks()
        .then((body) => res.setHeader('content-type', 'application/json').end(JSON.stringify(body))),
  );
  await new Promise((resolve) => jwks.listen(0, '127.0.0.1', resolve));
  closers.push(() => jwks.close());
  const peer = await startPeerServer('payer', '127.0.0.1', 0);
  closers.push(() => peer.close());
  const payerServer = await createPayerServer({
    peer,
    clients: [
      {
        clientId: 'dtr-bench',
        auth: 'private_key_jwt',
        jwksUri: `http://127.0.0.1:${jwks.address().port}/jwks.json`,
        grantTypes: ['client_credentials'],
      },
    ],
    packageDirs: [
      ...['home-oxygen-example', 'sdc-features-example', 'adaptive-example'].map((name) =>
        path.join(FIXTURE_PACKAGES_DIR, name),
      ),
      extra,
    ],
  });
  closers.push(() => payerServer.close());
  const policy = { allowInsecureLoopback: true };
  const payer = await new PayerRegistry(dataSource, policy).upsert({
    id: 'bench-package-payer',
    name: 'Benchmark payer',
    fhirBase: payerServer.fhirBase,
    tokenEndpoint: payerServer.tokenEndpoint,
    clientId: 'dtr-bench',
    signingAlg: 'ES384',
    scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
    igVersion: '2.2',
    coverageIdentifiers: ['http://example.org/payer-id|BENCH-PAYER'],
  });

  const client = new PayerClient(payer, new BackendServicesClient(keys, policy, clock), policy, clock);
  const cache = new PackageCache(dataSource);
  const retrieval = new PackageRetrieval(cache);
  const coverage = {
    resourceType: 'Coverage',
    id: 'sdc-cov1',
    status: 'active',
    beneficiary: { reference: 'Patient/sdc-grace' },
    payor: [{ identifier: { system: 'http://example.org/payer-id', value: 'BENCH-PAYER' } }],
  };
  const orderFor = (code, id) => ({
    resourceType: 'DeviceRequest',
    id,
    status: 'active',
    intent: 'order',
    subject: { reference: 'Patient/sdc-grace' },
    codeCodeableConcept: { coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code }] },
  });
  const session = (code, id) => retrieval.retrieve(client, { coverages: [coverage], orders: [orderFor(code, id)] });

  // Fill the payer's cache: one session per other package, then the one measured.
  process.stderr.write(
    `bench:package: caching ${copies * 2} other packages (${(extraBytes / 1e6).toFixed(1)} MB of content)…\n`,
  );
  for (let k = 1; k <= copies; k++) {
    for (const code of ['E0424', 'E0445']) {
      await session(`BENCH-${k}-${code}`, `dr-fill-${k}-${code}`);
    }
  }
  const first = await session('E0445', 'dr-first');
  if (first.questionnaires.length !== 1 || first.issues.some((i) => i.severity === 'error')) {
    throw new Error(`the SDC feature example package did not come back usable: ${JSON.stringify(first.issues)}`);
  }
  const bundle = JSON.parse(
    readFileSync(path.join(root, 'apps/sandbox/fixtures/patients/sdc-grace-okafor.json'), 'utf8'),
  );
  const now = new Date();
  const prefill = (pkg, questionnaires) =>
    new PrefillEngine(BundleReader.fromBundle(bundle)).runAll({
      pkg,
      questionnaires,
      patientId: 'sdc-grace',
      order: 'DeviceRequest/sdc-dr1',
      coverage: 'Coverage/sdc-cov1',
      igVersion: '2.2',
      now,
    });
  await prefill(first.pkg, first.questionnaires);

  const retrieveMs = [];
  const prefillMs = [];
  const objects = new Set([first.pkg]);
  let fromCache = 0;
  let last = first;
  for (let i = 0; i < sessions; i++) {
    const t0 = performance.now();
    last = await session('E0445', `dr-${i}`);
    retrieveMs.push(performance.now() - t0);
    if (last.fromCache) fromCache++;
    objects.add(last.pkg);
    const t1 = performance.now();
    await prefill(last.pkg, last.questionnaires);
    prefillMs.push(performance.now() - t1);
  }
  // What the prefill pool does on this thread for every package object it has not seen: hash the package's JSON.
  const t2 = performance.now();
  const resources = [
    ...last.pkg.questionnaires,
    ...last.pkg.libraries.map((l) => l.resource),
    ...last.pkg.valueSets,
    ...last.pkg.others,
  ];
  const json = JSON.stringify(resources);
  createHash('sha256').update(json).digest('base64url');
  const hashMs = performance.now() - t2;

  const pct = (values, p) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  };
  const ms = (v) => `${v.toFixed(1)} ms`;
  console.log(
    `payer cache: ${last.pkg.questionnaires.length} questionnaires, ${last.pkg.libraries.length} libraries, ${last.pkg.valueSets.length} value sets (${(json.length / 1e6).toFixed(2)} MB as JSON)`,
  );
  console.log(`warm sessions: ${sessions} (${fromCache} answered from the cache after changedsince)`);
  console.log(`retrieval: median ${ms(pct(retrieveMs, 50))}, p95 ${ms(pct(retrieveMs, 95))}`);
  console.log(
    `distinct package objects over ${sessions + 1} sessions: ${objects.size} (each new one: hand-off hash ${ms(hashMs)} on the main thread, then prepared again)`,
  );
  console.log(`prefill in-thread, warm: median ${ms(pct(prefillMs, 50))}, p95 ${ms(pct(prefillMs, 95))}`);
} catch (error) {
  process.exitCode = 1;
  console.error(`bench:package: ${error instanceof Error ? error.message : String(error)}`);
} finally {
  await Promise.all(
    closers.reverse().map((close) =>
      Promise.resolve()
        .then(close)
        .catch(() => undefined),
    ),
  );
  await adminQuery(`DROP DATABASE IF EXISTS ${scratch} WITH (FORCE)`);
  await embedded?.stop();
  rmSync(extra, { recursive: true, force: true });
}
