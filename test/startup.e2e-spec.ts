import { randomBytes } from 'node:crypto';
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

  it('without a profile refuses to listen on a non-loopback interface, saying what to do', async () => {
    const server = spawnServer({ DTR_HOST: '0.0.0.0', DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    expect(await server.exited).toBe(78);
    expect(server.output()).toMatch(/DTR_HOST: 0\.0\.0\.0 is not a loopback address.*DTR_PROFILE=production/);
    expect(server.output()).not.toMatch(/ready:/);
  });

  it('in production serves no /docs unless DTR_DOCS enables it; /launch is limited per client address (429)', async () => {
    const db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_prod');
    databases.push(db);
    const production = {
      DTR_PROFILE: 'production',
      DATABASE_URL: db.url,
      DTR_PORT: '0',
      DTR_PUBLIC_URL: 'https://dtr.example.org',
      DTR_ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}`,
      // Client addresses come from the (test's) proxy header, so two clients can be told apart on loopback.
      DTR_TRUST_PROXY: 'true',
      DTR_LAUNCH_RATE_LIMIT: '3',
      DTR_LAUNCH_RATE_WINDOW_SECONDS: '600',
    };
    const server = spawnServer(production);
    const docs = spawnServer({ ...production, DTR_DOCS: 'true' });
    try {
      const [url, docsUrl] = await Promise.all([server.ready, docs.ready]);
      expect((await fetch(`${url}/health/ready`)).status).toBe(200);
      expect((await fetch(`${url}/docs`)).status).toBe(404);
      expect((await fetch(`${url}/docs-json`)).status).toBe(404);
      expect(server.output()).not.toMatch(/API docs/);
      expect((await fetch(`${docsUrl}/docs-json`)).status).toBe(200);

      const launchFrom = (address: string) =>
        fetch(`${url}/launch?iss=${encodeURIComponent('https://ehr.example.org/fhir')}&launch=abc`, {
          headers: { 'x-forwarded-for': address },
          redirect: 'manual',
        });
      // Three launches (refused: the EHR is not registered) are within the limit; the fourth is refused before work.
      for (let i = 0; i < 3; i++) expect((await launchFrom('203.0.113.7')).status).toBe(403);
      const limited = await launchFrom('203.0.113.7');
      expect(limited.status).toBe(429);
      const retryAfter = Number(limited.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(600);
      expect(await limited.text()).toMatch(/too many launches from this address; try again in \d+ seconds/);
      // Another address is not limited, nor are other routes.
      expect((await launchFrom('203.0.113.8')).status).toBe(403);
      expect((await fetch(`${url}/health/live`, { headers: { 'x-forwarded-for': '203.0.113.7' } })).status).toBe(200);
    } finally {
      server.child.kill('SIGTERM');
      docs.child.kill('SIGTERM');
      await Promise.all([server.exited, docs.exited]);
    }
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
