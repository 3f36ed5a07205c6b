import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, inject, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');

/** The figure `label` printed by the script, as a number. */
function figure(output: string, label: string): number {
  const line = output.split('\n').find((l) => l.startsWith(label));
  if (!line) throw new Error(`no "${label}" line in:\n${output}`);
  // `label<padding>value`: the value follows the padding (two spaces or more).
  return Number(line.split(/\s{2,}/)[1]?.split(' ')[0]);
}

/**
 * The small version of `npm run chaos:instances`: two server processes on the run's PostgreSQL behind a round-robin
 * balancer, both killed with SIGKILL and restarted while clinicians work across them. What a user or the peers would
 * notice: a session that stops answering, a refresh token the EHR sees exchanged twice (the sandbox EHR rotates them,
 * so the second exchange would revoke the grant), two submissions for one form, a payer receiving one twice, or
 * before the EHR copy was verified.
 */
describe('two instances on one database (chaos:instances, small)', () => {
  it('loses no session, refreshes each token once, and submits each form once across kills', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [path.join(root, 'scripts', 'chaos-instances.mjs')],
      {
        cwd: root,
        env: {
          ...process.env,
          DATABASE_URL: inject('databaseUrl'),
          CHAOS_SKIP_BUILD: '1',
          CHAOS_SESSIONS: '4',
          CHAOS_CONCURRENCY: '2',
        },
        timeout: 240_000,
      },
    ).catch((error: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`chaos:instances failed: ${error.message}\n${error.stdout ?? ''}\n${error.stderr ?? ''}`);
    });
    expect(figure(stdout, 'sessions (launch')).toBe(4);
    expect(stdout).toContain('(4 reached Send)');
    expect(figure(stdout, 'instance kills')).toBe(2);
    const [first, second] = /requests served by instance 0 \/ 1\s+(\d+) \/ (\d+)/.exec(stdout)!.slice(1).map(Number);
    expect(first).toBeGreaterThan(0);
    expect(second).toBeGreaterThan(0);
    // Tokens were refreshed (the run exercised the race), and never twice.
    expect(figure(stdout, 'EHR token refreshes')).toBeGreaterThan(0);
    expect(figure(stdout, 'duplicate refreshes')).toBe(0);
    expect(figure(stdout, 'sessions lost')).toBe(0);
    expect(figure(stdout, 'duplicate submissions')).toBe(0);
    expect(figure(stdout, 'delivered to the payer')).toBe(4);
    expect(figure(stdout, 'sent before the EHR copy was verified')).toBe(0);
  }, 300_000);
});
