import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';

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
