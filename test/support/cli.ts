import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { repoRoot } from './processes.js';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * A place to run the `dtr` command line as an operator does: a temporary folder, a fresh key ring, and an environment
 * holding only what the CLI needs (DATABASE_URL once `useDatabase` is called). `dtr` runs bin/dtr.mjs to completion.
 */
export function cliWorkspace(prefix: string) {
  const dir = mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: process.env['HOME'] ?? '/root',
    DTR_ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}`,
    DTR_DATA_DIR: path.join(dir, 'data'),
  };
  return {
    dir,
    env,
    useDatabase(url: string): void {
      env['DATABASE_URL'] = url;
    },
    dtr(args: string[], extraEnv: Record<string, string> = {}): CliRun {
      const run = spawnSync(process.execPath, [path.join(repoRoot, 'bin/dtr.mjs'), ...args], {
        cwd: repoRoot,
        env: { ...env, ...extraEnv },
        encoding: 'utf8',
      });
      return { code: run.status, stdout: run.stdout, stderr: run.stderr };
    },
    /** Writes a file in the workspace (JSON text for anything that is not a string or bytes); its path. */
    file(name: string, content: string | Buffer | object): string {
      const target = path.join(dir, name);
      writeFileSync(
        target,
        typeof content === 'string' || Buffer.isBuffer(content) ? content : JSON.stringify(content),
      );
      return target;
    },
    /** The rows of `sql` on the workspace's database, as JSON text (to search for what must not be stored). */
    async dump(sql: string): Promise<string> {
      const client = new pg.Client({ connectionString: env['DATABASE_URL'] });
      await client.connect();
      try {
        return JSON.stringify((await client.query(sql)).rows);
      } finally {
        await client.end();
      }
    },
    remove(): void {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
