import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { EmbeddedPostgresSupervisor, migrate } from '@dtr/persistence';
import cookieParser from 'cookie-parser';
import express from 'express';
import helmet from 'helmet';
import path from 'node:path';
import { AppModule } from './app.module.js';
import type { AppConfig } from './config/app.config.js';
import { LifecycleState } from './health/lifecycle-state.js';
import { bodyMiddleware } from './http/body.middleware.js';
import { urlCheckMiddleware } from './http/url-check.middleware.js';
import { rateLimitMiddleware } from './http/rate-limit.middleware.js';
import { requestIdMiddleware } from './http/request-id.middleware.js';
import { requestOriginMiddleware } from './http/request-origin.middleware.js';
import { JsonLogger } from './logging/json-logger.js';

export interface RunningServer {
  app: INestApplication;
  /** Base URL the server listens on (e.g. http://127.0.0.1:3000). */
  url: string;
  databaseUrl: string;
  embedded: EmbeddedPostgresSupervisor | undefined;
  /** Drains, closes the HTTP server and the database pool, then stops the embedded database. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts everything the server needs, in order: the database (external, or embedded when no
 * DATABASE_URL is configured), migrations under the advisory lock, the Nest application, the listener.
 */
export async function startServer(config: AppConfig, logger = new JsonLogger(config.logLevel)): Promise<RunningServer> {
  let embedded: EmbeddedPostgresSupervisor | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await EmbeddedPostgresSupervisor.start({
      dataDir: path.join(config.dataDir, 'postgres'),
      database: 'dtr',
      log: (message, fields) =>
        logger.entry('info', message, fields as Record<string, string | number>, 'EmbeddedPostgres'),
    });
    databaseUrl = embedded.url;
  }
  try {
    const migration = await migrate(databaseUrl);
    logger.entry(
      'info',
      'migrations checked',
      {
        applied: migration.applied.length,
        names: migration.applied.join(',') || undefined,
        waitedForLockMs: migration.waitedForLockMs,
      },
      'Migrations',
    );

    const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot({ config, databaseUrl, logger }), {
      logger,
      bodyParser: false,
      abortOnError: false,
    });
    configureHttp(app, config, logger);
    await app.listen(config.port, config.host);
    const address = app.getHttpServer().address() as { port: number };
    const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${address.port}`;

    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        app.get(LifecycleState).startDraining();
        const server = app.getHttpServer() as import('node:http').Server;
        server.closeIdleConnections();
        const force = setTimeout(() => server.closeAllConnections(), Math.max(1000, config.shutdownTimeoutMs - 2000));
        try {
          await app.close();
        } finally {
          clearTimeout(force);
          await embedded?.stop();
        }
      })());
    return { app, url, databaseUrl, embedded, close };
  } catch (error) {
    await embedded?.stop();
    throw error;
  }
}

function configureHttp(app: NestExpressApplication, config: AppConfig, logger: JsonLogger): void {
  app.set('trust proxy', config.trustProxy);
  app.disable('x-powered-by');
  app.use(requestIdMiddleware(logger));
  app.use(urlCheckMiddleware(logger));
  app.use(
    helmet({
      contentSecurityPolicy: {
        directives: {
          // Swagger UI at /docs needs inline styles and data: images; nothing else is relaxed.
          'style-src': ["'self'", "'unsafe-inline'"],
          'img-src': ["'self'", 'data:'],
          // Nobody frames our pages, unless a tenant lists its EHR's origins (content-security-policy.ts opens its responses).
          'frame-ancestors': ["'none'"],
          'upgrade-insecure-requests': config.profile === 'production' ? [] : null,
        },
      },
      strictTransportSecurity: config.profile === 'production',
      xFrameOptions: { action: 'deny' },
    }),
  );
  // Launch starts work at the EHR and writes a launch attempt: limited per client address before anything else.
  app.use('/launch', rateLimitMiddleware(config.launchRateLimit, logger));
  serveStatic(app);
  app.use(requestOriginMiddleware(config.publicUrl, logger));
  app.use(cookieParser());
  app.use(bodyMiddleware({ maxBytes: config.bodyLimitBytes, maxDepth: config.jsonMaxDepth }, logger));

  // Production serves no API documentation unless DTR_DOCS=true: it describes every route to anyone who asks.
  if (!config.docs) return;
  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('DTR backend')
      .setDescription('Confidential, server-side Da Vinci DTR backend: SMART launch, prefill, write-back, disclosure')
      .setVersion('0.1.0')
      .build(),
  );
  SwaggerModule.setup('docs', app, document, { jsonDocumentUrl: 'docs-json' });
}

/**
 * The form page's static files, copied into dist/static by the build (no PHI: open to anyone). The renderer sits under
 * its pinned version and is cached for a year; the page's own script is revalidated on every load.
 */
function serveStatic(app: NestExpressApplication): void {
  const root = path.resolve(import.meta.dirname, '..', '..', '..', 'static');
  app.use(
    '/static/lforms',
    express.static(path.join(root, 'lforms'), { immutable: true, maxAge: '365d', index: false }),
  );
  app.use('/static/app', express.static(path.join(root, 'app'), { maxAge: 0, index: false }));
}

/**
 * On SIGTERM or SIGINT: run `close` once, then exit 0 (1 if it failed). If closing takes longer than
 * `timeoutMs`, run `onTimeout` (e.g. a quick stop of the embedded database) and exit 1.
 */
export function stopOnSignals(
  close: () => Promise<void>,
  logger: JsonLogger,
  timeoutMs: number,
  onTimeout: () => Promise<void> | undefined = () => undefined,
): void {
  let signalled = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (signalled) return;
    signalled = true;
    logger.entry('info', 'shutting down', { signal });
    setTimeout(() => {
      logger.entry('error', 'shutdown timed out; exiting', { timeoutMs });
      void Promise.resolve(onTimeout()).finally(() => process.exit(1));
    }, timeoutMs).unref();
    close().then(
      () => {
        logger.entry('info', 'stopped');
        process.exit(0);
      },
      (error: unknown) => {
        logger.entry('error', 'error during shutdown', {
          error: error instanceof Error ? error.message : String(error),
        });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}
