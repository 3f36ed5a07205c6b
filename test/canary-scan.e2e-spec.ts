import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, inject, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');

/**
 * The small version of `npm run canary`: a run seeded with secret and PHI canaries (and text planted in upstream error
 * answers), then the server's log, every response, the audit trail and every table searched. Each place must have
 * been scanned (something to look at) and hold no canary.
 */
describe('canary scan (small)', () => {
  it('finds no token, key, secret, PHI or upstream text where none may go', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, 'scripts', 'canary-scan.mjs')], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: inject('databaseUrl'), CANARY_SKIP_BUILD: '1', CANARY_CLINICIANS: '2' },
      timeout: 180_000,
    }).catch((error: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`canary scan failed: ${error.message}\n${error.stdout ?? ''}\n${error.stderr ?? ''}`);
    });
    const places = [
      'server log lines',
      'responses (headers and bodies)',
      'error responses (also for PHI)',
      'audit trail (table and /admin/audit)',
      'database tables (every row)',
    ];
    for (const place of places) {
      const line = stdout.split('\n').find((l) => l.startsWith(place));
      expect(line, place).toBeDefined();
      const [scanned, found] = line!.slice(place.length).trim().split(/\s+/);
      expect(Number(scanned), `${place}: scanned`).toBeGreaterThan(0);
      expect(found, `${place}: canaries found`).toBe('0');
    }
    // The run had canaries to look for: tokens issued during it, and the seeded PHI.
    const counts = /canaries: (\d+) tokens and codes, (\d+) keys and secrets, (\d+) PHI values/.exec(stdout);
    expect(Number(counts?.[1])).toBeGreaterThan(4);
    expect(Number(counts?.[3])).toBeGreaterThan(0);
  }, 240_000);
});
