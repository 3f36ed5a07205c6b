import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, inject, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');

/**
 * The small version of `npm run load`: two short levels of concurrent clinicians (launch → prepare → save) against
 * a server of the run's own. What is asserted is what a user would notice (every flow completes, the server stays
 * live, the figures are printed), never a latency.
 */
describe('load (small)', () => {
  it('completes every flow at 1 and 3 concurrent sessions and prints the figures', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, 'scripts', 'load.mjs')], {
      cwd: root,
      env: {
        ...process.env,
        DATABASE_URL: inject('databaseUrl'),
        LOAD_SKIP_BUILD: '1',
        LOAD_LEVELS: '1,3',
        LOAD_SECONDS: '4',
      },
      timeout: 180_000,
    }).catch((error: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`load failed: ${error.message}\n${error.stdout ?? ''}\n${error.stderr ?? ''}`);
    });
    const rows = stdout
      .split('\n')
      .filter((l) => /^\d+\s/.test(l))
      .map((l) => l.split(/\s+/));
    expect(rows.map((r) => r[0])).toEqual(['1', '3']);
    for (const [, flows, failed, rps] of rows) {
      expect(Number(flows)).toBeGreaterThan(0);
      expect(Number(failed)).toBe(0);
      expect(Number(rps)).toBeGreaterThan(0);
    }
    expect(stdout).not.toContain('failed:');
  }, 240_000);
});
