import { afterAll, describe, expect, inject, it } from 'vitest';
import pg from 'pg';
import { MIGRATIONS } from '@dtr/persistence';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { spawnServer } from './support/processes.js';

describe('dtr-server start-up', () => {
  const databases: ScratchDatabase[] = [];
  afterAll(async () => {
    await Promise.all(databases.map((db) => db.drop()));
  });

  it('stops at boot with a message naming a bad setting', async () => {
    const server = spawnServer({ DTR_PORT: 'not-a-port', DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    expect(await server.exited).toBe(78);
    expect(server.output()).toMatch(/DTR_PORT: /);
  });

  it('refuses to start in production without the secrets it must not default', async () => {
    const server = spawnServer({ DTR_PROFILE: 'production', DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    expect(await server.exited).toBe(78);
    expect(server.output()).toMatch(/DTR_ENCRYPTION_KEYS: is required/);
    expect(server.output()).toMatch(/DTR_PUBLIC_URL: is required/);
  });

  it("refuses to start in production with prefill in the request thread (no bounds on a payer's logic)", async () => {
    const server = spawnServer({
      DTR_PROFILE: 'production',
      DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
      DTR_PUBLIC_URL: 'https://dtr.example.org',
      DTR_ENCRYPTION_KEYS: `k1:${Buffer.alloc(32, 3).toString('base64')}`,
      DTR_PREFILL_WORKERS: '0',
    });
    expect(await server.exited).toBe(78);
    expect(server.output()).toMatch(/DTR_PREFILL_WORKERS: must be 1 or more in the production profile/);
  });

  it('fails clearly when the database cannot be reached', async () => {
    const server = spawnServer({ DTR_PORT: '0', DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    expect(await server.exited).toBe(1);
    expect(server.output()).toMatch(/cannot connect to the database/);
  });

  it('starts two instances at the same moment on one empty database; migrations run once', async () => {
    const db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_twin');
    databases.push(db);
    const first = spawnServer({ DATABASE_URL: db.url, DTR_PORT: '0' });
    const second = spawnServer({ DATABASE_URL: db.url, DTR_PORT: '0' });
    try {
      const urls = await Promise.all([first.ready, second.ready]);
      for (const url of urls) expect((await fetch(`${url}/health/ready`)).status).toBe(200);

      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      const rows = await client.query<{ name: string }>('SELECT name FROM schema_migration ORDER BY id');
      await client.end();
      expect(rows.rows.map((r) => r.name)).toEqual(MIGRATIONS.map((m) => new m().name));

      // Exactly one of the two applied the migrations; the other waited and found nothing to do.
      const applied = [first, second].map((s) => {
        const line = s
          .output()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { msg: string; applied?: number })
          .find((l) => l.msg === 'migrations checked');
        return line?.applied;
      });
      expect(applied.sort()).toEqual([0, MIGRATIONS.length]);
    } finally {
      first.child.kill('SIGTERM');
      second.child.kill('SIGTERM');
      expect(await first.exited).toBe(0);
      expect(await second.exited).toBe(0);
    }
  });
});
