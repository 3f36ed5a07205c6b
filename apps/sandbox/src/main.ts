import { loadSandboxOptions } from './sandbox.config.js';
import { startSandbox } from './sandbox.js';

/**
 * The sandbox on its own (dev/test only): `node dist/apps/sandbox/src/main.js [bundle.json|folder ...]`.
 * `npm start` runs it together with the DTR server instead (scripts/start.mjs).
 */
async function main(): Promise<void> {
  const options = loadSandboxOptions(process.env, process.argv.slice(2));
  const sandbox = await startSandbox(options);
  process.stderr.write(
    `\nSandbox EHR:   ${sandbox.ehr.demoUrl}  (FHIR ${sandbox.ehr.fhirBase})\n` +
      `Sandbox payer: ${sandbox.payer.fhirBase}  (token ${sandbox.payer.tokenEndpoint})\n` +
      `Second sandbox payer: ${sandbox.secondPayer.fhirBase}  (token ${sandbox.secondPayer.tokenEndpoint})\n` +
      `UDAP community anchor: ${sandbox.ehr.peer.origin}/udap/anchor.pem  (client certificates: POST ${sandbox.ehr.peer.origin}/udap/certificates)\n\n`,
  );
  const stop = () => {
    void sandbox.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`sandbox: failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
