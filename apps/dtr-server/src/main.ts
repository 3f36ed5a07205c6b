import 'reflect-metadata';
import { loadAppConfig } from './config/app.config.js';
import { exitOnConfigError } from './config/config-exit.js';
import { startServer, stopOnSignals } from './bootstrap.js';
import { JsonLogger } from './logging/json-logger.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadAppConfig(process.env);
  } catch (error) {
    exitOnConfigError('dtr-server', error);
    throw error;
  }
  const logger = new JsonLogger(config.logLevel);
  const server = await startServer(config, logger);
  logger.entry('info', 'dtr-server listening', {
    url: server.url,
    profile: config.profile,
    database: server.embedded ? 'embedded' : 'external',
  });
  process.stderr.write(`\nDTR server ready: ${server.url}${config.docs ? `  (API docs: ${server.url}/docs)` : ''}\n\n`);

  stopOnSignals(
    () => server.close(),
    logger,
    config.shutdownTimeoutMs,
    () => server.embedded?.stop(1000),
  );
}

main().catch((error: unknown) => {
  const message =
    error instanceof Error
      ? `${error.message}${error.cause instanceof Error ? ` (${error.cause.message})` : ''}`
      : String(error);
  process.stderr.write(`dtr-server: failed to start: ${message}\n`);
  process.exit(1);
});
