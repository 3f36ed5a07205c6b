import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { createScratchDatabase, type ScratchDatabase } from './databases.js';

export const repoRoot = path.resolve(import.meta.dirname, '..', '..');

export interface SpawnedServer {
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the URL once the process prints its ready line. */
  ready: Promise<string>;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
}

/**
 * Runs the built server (dist/) as a separate process, the way `npm start` does, with the given
 * environment on top of a minimal one (no inherited DATABASE_URL unless given).
 */
export function spawnServer(env: Record<string, string>, entry = 'dist/apps/dtr-server/src/main.js'): SpawnedServer {
  const child = spawn(process.execPath, [path.join(repoRoot, entry)], {
    cwd: repoRoot,
    // Every launch of a test comes from loopback: the per-address launch limit is lifted unless a test sets it.
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      HOME: process.env['HOME'] ?? '/root',
      DTR_LAUNCH_RATE_LIMIT: '1000000',
      // The machine running the tests may be busy: a generous prefill deadline, unless a test sets its own.
      DTR_PREFILL_DEADLINE_MS: '60000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const ready = new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /ready: (http:\/\/\S+)/.exec(output);
      if (match?.[1]) resolve(match[1]);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, signal) =>
      reject(new Error(`server exited (${code ?? signal}) before ready:\n${output}`)),
    );
  });
  ready.catch(() => undefined);
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  return { child, output: () => output, ready, exited };
}

export interface RunningServer {
  db: ScratchDatabase;
  server: SpawnedServer;
  /** The server's base URL (its ready line). */
  url: string;
  /** Stops the server (when still running) and drops its database. */
  stop(): Promise<void>;
}

/**
 * The built server alone (dist/, as `npm run start:server` runs it) on a scratch database of its own, a free port
 * and `env` added; resolves once it is ready. Whatever was started is stopped again when it never gets that far.
 */
export async function startServer(
  adminDatabaseUrl: string,
  prefix: string,
  env: Record<string, string> = {},
): Promise<RunningServer> {
  const db = await createScratchDatabase(adminDatabaseUrl, prefix);
  const server = spawnServer({ DATABASE_URL: db.url, DTR_PORT: '0', ...env });
  const stop = async () => {
    if (server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
    await db.drop();
  };
  try {
    return { db, server, url: await server.ready, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
