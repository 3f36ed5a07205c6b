#!/usr/bin/env node
// `npm start`: the DTR server (embedded PostgreSQL unless DATABASE_URL is set) and the sandbox EHR and payer
// in one process, then one URL to open. Dev/demo only: production runs dist/apps/dtr-server/src/main.js.
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { registerSandboxPeers } from './register-sandbox.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);

const { loadAppConfig } = await load('apps/dtr-server/src/config/app.config.js');
const { exitOnConfigError } = await load('apps/dtr-server/src/config/config-exit.js');
const { startServer, stopOnSignals } = await load('apps/dtr-server/src/bootstrap.js');
const { JsonLogger } = await load('apps/dtr-server/src/logging/json-logger.js');
const { loadSandboxOptions } = await load('apps/sandbox/src/sandbox.config.js');
const { startSandbox } = await load('apps/sandbox/src/sandbox.js');

let config;
try {
  config = loadAppConfig(process.env);
} catch (error) {
  exitOnConfigError('dtr-server', error);
  throw error;
}
const logger = new JsonLogger(config.logLevel);
let server;
let sandbox;
try {
  server = await startServer(config, logger);
  const options = loadSandboxOptions({ ...process.env, SANDBOX_APP_URL: server.url }, process.argv.slice(2));
  sandbox = await startSandbox(options);
  await registerSandboxPeers(server, options, {
    ehrFhirBase: sandbox.ehr.fhirBase,
    payerFhirBase: sandbox.payer.fhirBase,
    payerTokenEndpoint: sandbox.payer.tokenEndpoint,
    secondPayerFhirBase: sandbox.secondPayer.fhirBase,
    secondPayerTokenEndpoint: sandbox.secondPayer.tokenEndpoint,
  });
} catch (error) {
  process.stderr.write(`npm start: failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
  await server?.close().catch(() => undefined);
  process.exit(1);
}
stopOnSignals(
  async () => {
    await sandbox.close();
    await server.close();
  },
  logger,
  config.shutdownTimeoutMs,
  () => server.embedded?.stop(1000),
);
process.stderr.write(
  `\nDTR server ready: ${server.url}  (API docs: ${server.url}/docs)\n` +
    `Sandbox EHR: ${sandbox.ehr.fhirBase}   Sandbox payer: ${sandbox.payer.fhirBase}   ` +
    `Second sandbox payer: ${sandbox.secondPayer.fhirBase}\n\n` +
    `Open ${sandbox.ehr.demoUrl} to try it: pick a patient and an order, then launch.\n\n`,
);
