import { mkdtempSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnServer } from './support/processes.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function postmasterPid(dataDir: string): number | undefined {
  try {
    return Number(readFileSync(path.join(dataDir, 'postgres', 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
}

/**
 * With no DATABASE_URL the server runs its own PostgreSQL (what `npm start` does on a fresh machine).
 * Each step is one test, in order, sharing one data folder.
 */
describe.sequential('embedded PostgreSQL (no DATABASE_URL)', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'dtr-embedded-'));
  chmodSync(dataDir, 0o755);
  const env = { DTR_DATA_DIR: dataDir, DTR_PORT: '0' };
  const leftovers: number[] = [];

  afterAll(() => {
    for (const pid of leftovers) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('starts on a fresh folder and answers ready (time to ready reported, not asserted)', async () => {
    const started = Date.now();
    const server = spawnServer(env);
    const url = await server.ready;
    const ready = await fetch(`${url}/health/ready`);
    const elapsed = Date.now() - started;
    expect(ready.status).toBe(200);
    console.log(`embedded PostgreSQL on a fresh folder: server ready in ${elapsed} ms (initdb included)`);
    const pid = postmasterPid(dataDir);
    expect(pid && isAlive(pid)).toBe(true);
    leftovers.push(pid!);

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    // Clean exit leaves no postgres process behind.
    expect(isAlive(pid!)).toBe(false);
    expect(server.output()).toMatch(/"msg":"stopped"/);
  });

  it('comes up again after the previous run was killed with SIGKILL', async () => {
    const first = spawnServer(env);
    await first.ready;
    const orphan = postmasterPid(dataDir)!;
    leftovers.push(orphan);
    first.child.kill('SIGKILL');
    await first.exited;
    expect(isAlive(orphan)).toBe(true); // the orphan a killed parent leaves

    const second = spawnServer(env);
    const url = await second.ready;
    expect((await fetch(`${url}/health/ready`)).status).toBe(200);
    expect(isAlive(orphan)).toBe(false);
    expect(second.output()).toMatch(/left running by a previous run that was killed/);
    const current = postmasterPid(dataDir)!;
    leftovers.push(current);

    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect(isAlive(current)).toBe(false);
  });

  it('refuses to share the folder with another live instance', async () => {
    const first = spawnServer(env);
    await first.ready;
    leftovers.push(postmasterPid(dataDir)!);
    const second = spawnServer(env);
    expect(await second.exited).toBe(1);
    expect(second.output()).toMatch(/in use by process \d+/);
    // The first is unharmed.
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
  });
});
