// Shared by the benchmark and chaos scripts: free ports, child processes that announce readiness, and a clinician's
// EHR launch followed hop by hop with a cookie jar (what a browser does, without one). Loopback only.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const freePort = () =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

/** Spawns a node process and resolves `matched` once its output matches `ready` (with the match). */
export function start(args, env, ready, what) {
  const child = spawn(process.execPath, args, {
    cwd: root,
    // Every clinician of a run launches from loopback: the per-address launch limit is lifted.
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      DTR_LAUNCH_RATE_LIMIT: '1000000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
  const matched = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      output = (output + chunk.toString()).slice(-200_000);
      const match = ready.exec(output);
      if (match) resolve(match);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    void exited.then((code) =>
      reject(new Error(`${what} exited (${code}) before it was ready:\n${output.slice(-2000)}`)),
    );
  });
  matched.catch(() => undefined);
  return { child, exited, matched, output: () => output };
}

/** A cookie jar per host, as a browser keeps one. */
class CookieJar {
  jar = new Map();
  /** Requests made per host (each redirect hop is one). */
  requests = new Map();

  header(host) {
    return [...(this.jar.get(host) ?? new Map())].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  keep(host, response) {
    for (const line of response.headers.getSetCookie()) {
      const pair = line.split(';')[0];
      const eq = pair.indexOf('=');
      if (!this.jar.has(host)) this.jar.set(host, new Map());
      this.jar.get(host).set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
  }

  /**
   * GET `url` (or POST it, as a page's form does, when `method` is 'POST') and follow redirects as GETs (each hop with
   * its host's cookies); returns the last URL and status.
   */
  async navigate(url, maxHops = 20, method = 'GET') {
    for (let hop = 0; hop < maxHops; hop++) {
      const target = new URL(url);
      this.requests.set(target.host, (this.requests.get(target.host) ?? 0) + 1);
      const response = await fetch(target, {
        method: hop === 0 ? method : 'GET',
        redirect: 'manual',
        headers: { cookie: this.header(target.host) },
      });
      this.keep(target.host, response);
      await response.arrayBuffer();
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location) {
        url = new URL(location, target).toString();
        continue;
      }
      return { url: target, status: response.status };
    }
    throw new Error(`more than ${maxHops} redirects from ${url}`);
  }
}

/** An EHR launch of our server by the sandbox EHR for `patient` and `order`; returns the browser's cookie jar. */
export async function launch(serverUrl, ehrFhir, { patient, user, order }) {
  const created = await fetch(`${new URL(ehrFhir).origin}/_sandbox/launches`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ patient, user, fhirContext: [{ reference: order }] }),
  });
  if (!created.ok) throw new Error(`the sandbox EHR refused the launch: ${created.status} ${await created.text()}`);
  const { launch: id } = await created.json();
  const jar = new CookieJar();
  const end = await jar.navigate(`${serverUrl}/launch?iss=${encodeURIComponent(ehrFhir)}&launch=${id}`);
  if (end.url.pathname !== '/app' || end.status !== 200)
    throw new Error(`the launch ended at ${end.url} (${end.status})`);
  return jar;
}

export const quantile = (values, q) =>
  values.length === 0
    ? NaN
    : [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))];

/**
 * A patient's active Coverage with the sandbox payer and a stationary-oxygen order (HCPCS E0424, which the
 * home-oxygen package answers): the `-cov` and `-order` resources of `patient`.
 */
export function oxygenOrderRecord(patient) {
  return [
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
        coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: 'E0424' }],
      },
    },
  ];
}

/**
 * Child mode of the benchmark and chaos scripts: the DTR server from dist/ (configured from the environment), registered
 * with the sandbox peers named in `peers`, stopped on SIGTERM; prints `<label> ready: <url>` once it serves.
 * `publicUrl`: where browsers reach it when that is not its own address (a balancer in front of several instances).
 */
export async function serveRegistered(peers, label, publicUrl) {
  const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);
  const { registerSandboxPeers } = await import('../register-sandbox.mjs');
  const { loadAppConfig } = await load('apps/dtr-server/src/config/app.config.js');
  const { startServer, stopOnSignals } = await load('apps/dtr-server/src/bootstrap.js');
  const { JsonLogger } = await load('apps/dtr-server/src/logging/json-logger.js');
  const { loadSandboxOptions } = await load('apps/sandbox/src/sandbox.config.js');
  const config = loadAppConfig(process.env);
  const logger = new JsonLogger(config.logLevel);
  const server = await startServer(config, logger);
  const reachedAt = publicUrl ?? server.url;
  await registerSandboxPeers(
    { app: server.app, url: reachedAt },
    loadSandboxOptions(
      {
        SANDBOX_APP_URL: reachedAt,
        // A run that gave the sandbox its own client secret registers the same one.
        ...(process.env.SANDBOX_APP_CLIENT_SECRET
          ? { SANDBOX_APP_CLIENT_SECRET: process.env.SANDBOX_APP_CLIENT_SECRET }
          : {}),
      },
      [],
    ),
    peers,
  );
  stopOnSignals(
    () => server.close(),
    logger,
    config.shutdownTimeoutMs,
    () => server.embedded?.stop(1000),
  );
  process.stderr.write(`${label} ready: ${server.url}\n`);
}

/**
 * The sandbox EHR and payer in a child process of their own (so they outlive a server killed under them), on free
 * ports, loaded with the FHIR `bundle` (written to `dir`) and registering `appUrl` as our server; `env` adds sandbox
 * settings. Resolves the child and where its peers listen.
 */
export async function startSandboxProcess(dir, appUrl, bundle, env = {}) {
  const file = path.join(dir, 'patients.json');
  writeFileSync(file, JSON.stringify(bundle));
  const [ehrPort, payerPort] = await Promise.all([freePort(), freePort()]);
  const sandbox = start(
    ['dist/apps/sandbox/src/main.js'],
    {
      SANDBOX_EHR_PORT: String(ehrPort),
      SANDBOX_PAYER_PORT: String(payerPort),
      // The second payer on a port of its own (its default, the payer's + 1, may be taken).
      SANDBOX_SECOND_PAYER_PORT: '0',
      SANDBOX_APP_URL: appUrl,
      SANDBOX_BUNDLES: file,
      SANDBOX_PATIENTS: '1',
      ...env,
    },
    /Sandbox payer: (http:\S+)\s+\(token (http:\S+)\)/,
    'sandbox',
  );
  const [, payerFhir, payerToken] = await sandbox.matched;
  const ehrFhir = /FHIR (http:\S+)\)/.exec(sandbox.output())[1];
  return { sandbox, ehrFhir, payerFhir, payerToken };
}

/** A collection Bundle: practitioner `<prefix>-pr`, and `count` patients `<prefix>-<n>` each with an oxygen order. */
export function oxygenPatients(prefix, count, extra = () => []) {
  const family = prefix[0].toUpperCase() + prefix.slice(1);
  const entry = [{ resourceType: 'Practitioner', id: `${prefix}-pr`, name: [{ family, given: ['Dee'] }] }];
  for (let n = 1; n <= count; n++) {
    const id = `${prefix}-${n}`;
    entry.push(
      { resourceType: 'Patient', id, birthDate: '1950-01-01', name: [{ family, given: [`P${n}`] }] },
      ...oxygenOrderRecord(id),
      ...extra(id, n),
    );
  }
  return { resourceType: 'Bundle', type: 'collection', entry: entry.map((resource) => ({ resource })) };
}
