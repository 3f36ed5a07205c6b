#!/usr/bin/env node
// `npm start`: the DTR server (embedded PostgreSQL unless DATABASE_URL is set) and the sandbox EHR and payer
// in one process, then one URL to open. Dev/demo only: production runs dist/apps/dtr-server/src/main.js.
import 'reflect-metadata';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);

const { loadAppConfig, ConfigError } = await load('apps/dtr-server/src/config/app.config.js');
const { startServer, stopOnSignals } = await load('apps/dtr-server/src/bootstrap.js');
const { JsonLogger } = await load('apps/dtr-server/src/logging/json-logger.js');
const { loadSandboxOptions } = await load('apps/sandbox/src/sandbox.config.js');
const { startSandbox } = await load('apps/sandbox/src/sandbox.js');
const { TenantRegistry } = await load('libs/smart/src/index.js');
const { PayerRegistry } = await load('libs/payer/src/index.js');

let config;
try {
  config = loadAppConfig(process.env);
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`dtr-server: ${error.message}\n`);
    process.exit(78);
  }
  throw error;
}
const logger = new JsonLogger(config.logLevel);
let server;
let sandbox;
try {
  server = await startServer(config, logger);
  const options = loadSandboxOptions({ ...process.env, SANDBOX_APP_URL: server.url }, process.argv.slice(2));
  sandbox = await startSandbox(options);
  // Register the sandbox peers with our server, as an operator would (README: Registering an EHR / a payer).
  const [supplement, disclose] = options.ehrClients;
  await server.app.get(TenantRegistry).upsert({
    id: 'sandbox-ehr',
    name: 'Sandbox EHR',
    fhirBase: sandbox.ehr.fhirBase,
    discloseMode: 'user-delegated',
    supplement: {
      clientId: supplement.clientId,
      authMethod: 'client_secret_basic',
      clientSecret: supplement.clientSecret,
      scopes: ['launch', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs', 'user/Practitioner.rs'],
      redirectUri: `${server.url}/callback`,
    },
    disclose: {
      clientId: disclose.clientId,
      authMethod: 'private_key_jwt',
      signingAlg: 'ES384',
      scopes: ['openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cru'],
      redirectUri: `${server.url}/callback`,
    },
  });
  await server.app.get(PayerRegistry).upsert({
    id: 'sandbox-payer',
    name: 'Sandbox Health Plan',
    fhirBase: sandbox.payer.fhirBase,
    tokenEndpoint: sandbox.payer.tokenEndpoint,
    clientId: options.payerClients[0].clientId,
    signingAlg: 'ES384',
    scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
    igVersion: options.igVersion,
    coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER'],
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
    `Sandbox EHR: ${sandbox.ehr.fhirBase}   Sandbox payer: ${sandbox.payer.fhirBase}\n\n` +
    `Open ${sandbox.ehr.demoUrl} to try it: pick a patient and an order, then launch.\n\n`,
);
