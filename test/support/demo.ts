import { createScratchDatabase, type ScratchDatabase } from './databases.js';
import { spawnServer, type SpawnedServer } from './processes.js';

export interface RunningDemo {
  db: ScratchDatabase;
  app: SpawnedServer;
  /** The sandbox EHR page `npm start` prints. */
  demoUrl: string;
  /** The sandbox payer's FHIR base, as printed. */
  payerFhirBase: string;
  stop(): Promise<void>;
}

/** `npm start` (scripts/start.mjs) on a scratch database, every port picked free, `env` added to its environment. */
export async function startDemo(adminDatabaseUrl: string, prefix: string, env: Record<string, string> = {}) {
  const db = await createScratchDatabase(adminDatabaseUrl, prefix);
  const app = spawnServer(
    { DATABASE_URL: db.url, DTR_PORT: '0', SANDBOX_EHR_PORT: '0', SANDBOX_PAYER_PORT: '0', ...env },
    'scripts/start.mjs',
  );
  await app.ready;
  const deadline = Date.now() + 30_000;
  while (!/Open (http:\/\/\S+) to try it/.test(app.output()) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 100));
  const demo: RunningDemo = {
    db,
    app,
    demoUrl: /Open (http:\/\/\S+) to try it/.exec(app.output())![1]!,
    payerFhirBase: /Sandbox payer: (http:\/\/\S+)/.exec(app.output())![1]!,
    async stop() {
      app.child.kill('SIGTERM');
      await app.exited;
      await db.drop();
    },
  };
  return demo;
}
