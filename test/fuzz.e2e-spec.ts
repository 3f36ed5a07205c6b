import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, inject, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');

/**
 * The small version of `npm run fuzz`: a fixed seed, 1500 hostile cases (routes of a server of our own, package files
 * through `dtr package check`'s code, patient bundles through `dtr prefill`'s). No 5xx, no crash, no hang; and the
 * cases reached the handlers (some accepted), so the run is not all refusals at the door.
 */
describe('fuzz (small)', () => {
  it('answers hostile input without a 5xx, a crash or a hang', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, 'scripts', 'fuzz.mjs')], {
      cwd: root,
      env: {
        ...process.env,
        DATABASE_URL: inject('databaseUrl'),
        FUZZ_SKIP_BUILD: '1',
        FUZZ_CASES: '1500',
        FUZZ_SEED: '7',
      },
      timeout: 280_000,
    }).catch((error: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`fuzz failed: ${error.message}\n${error.stdout ?? ''}\n${error.stderr ?? ''}`);
    });
    const targets = ['HTTP routes', 'dtr package check (package files)', 'dtr prefill (patient bundles)'];
    for (const target of targets) {
      const line = stdout.split('\n').find((l) => l.startsWith(target));
      expect(line, target).toBeDefined();
      const [cases, fiveXx, crashes, hangs, , accepted] = line!.slice(target.length).trim().split(/\s+/).map(Number);
      expect(cases, `${target}: cases`).toBeGreaterThan(100);
      expect({ fiveXx, crashes, hangs }, target).toEqual({ fiveXx: 0, crashes: 0, hangs: 0 });
      expect(accepted, `${target}: accepted`).toBeGreaterThan(0);
    }
  }, 300_000);
});
