import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from '../../../test/support/databases.js';
import { migrate } from './migrate.js';
import { MIGRATIONS } from './migrations/index.js';

describe('migrate (real PostgreSQL)', () => {
  const databases: ScratchDatabase[] = [];
  afterAll(async () => {
    await Promise.all(databases.map((db) => db.drop()));
  });

  it('applies every migration once when five instances migrate the same empty database at once', async () => {
    const db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_migrate');
    databases.push(db);
    const results = await Promise.all(Array.from({ length: 5 }, () => migrate(db.url)));
    const counts = results.map((r) => r.applied.length).sort();
    expect(counts).toEqual([0, 0, 0, 0, MIGRATIONS.length]);

    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const rows = await client.query('SELECT name FROM schema_migration');
      expect(rows.rowCount).toBe(MIGRATIONS.length);
    } finally {
      await client.end();
    }
    // And again later: nothing to do.
    expect((await migrate(db.url)).applied).toEqual([]);
  });

  it('reports an unreachable database as NOT_READY', async () => {
    await expect(migrate('postgres://nobody@127.0.0.1:1/none')).rejects.toMatchObject({ code: 'NOT_READY' });
  });
});

describe('audit_event is append-only', () => {
  const url = inject('databaseUrl');

  async function withClient<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  }

  it('accepts inserts and refuses updates and deletes', async () => {
    await withClient(async (client) => {
      const inserted = await client.query<{ id: string }>(
        `INSERT INTO audit_event (type_code, action, outcome, detail) VALUES ('rest', 'R', '0', '{"probe":"append-only"}') RETURNING id`,
      );
      const id = inserted.rows[0]!.id;
      await expect(client.query(`UPDATE audit_event SET outcome = '8' WHERE id = $1`, [id])).rejects.toThrow(
        /append-only/,
      );
      await expect(client.query(`DELETE FROM audit_event WHERE id = $1`, [id])).rejects.toThrow(/append-only/);
      const still = await client.query(`SELECT outcome FROM audit_event WHERE id = $1`, [id]);
      expect(still.rows[0]).toEqual({ outcome: '0' });
    });
  });

  it('lets only the retention purge delete, and only events older than its cutoff, itself a year old or more', async () => {
    await withClient(async (client) => {
      const at = async (daysAgo: number) =>
        (
          await client.query<{ id: string }>(
            `INSERT INTO audit_event (type_code, action, outcome, recorded_at)
             VALUES ('rest', 'R', '0', now() - make_interval(days => $1)) RETURNING id`,
            [daysAgo],
          )
        ).rows[0]!.id;
      const exists = async (id: string) =>
        (await client.query(`SELECT 1 FROM audit_event WHERE id = $1`, [id])).rowCount === 1;
      const old = await at(400);
      const recent = await at(100);

      // The former switch no longer opens anything.
      await client.query('BEGIN');
      await client.query(`SET LOCAL dtr.audit_purge = 'on'`);
      await expect(client.query(`DELETE FROM audit_event WHERE id = $1`, [old])).rejects.toThrow(/append-only/);
      await client.query('ROLLBACK');
      // A cutoff less than a year ago opens nothing either, set by hand or asked of the purge function.
      await client.query('BEGIN');
      await client.query(`SELECT set_config('dtr.audit_purge_before', (now() - interval '10 days')::text, true)`);
      await expect(client.query(`DELETE FROM audit_event WHERE id = $1`, [old])).rejects.toThrow(/append-only/);
      await client.query('ROLLBACK');
      await expect(client.query(`SELECT audit_event_purge(now() - interval '30 days')`)).rejects.toThrow(
        /at least 365 days/,
      );
      // Rows younger than a year-old cutoff stay even when named explicitly.
      await client.query('BEGIN');
      await client.query(`SELECT set_config('dtr.audit_purge_before', (now() - interval '370 days')::text, true)`);
      await expect(client.query(`DELETE FROM audit_event WHERE id = $1`, [recent])).rejects.toThrow(/append-only/);
      await client.query('ROLLBACK');

      const purged = await client.query<{ n: string }>(`SELECT audit_event_purge(now() - interval '370 days') AS n`);
      expect(Number(purged.rows[0]!.n)).toBeGreaterThanOrEqual(1);
      expect(await exists(old)).toBe(false);
      expect(await exists(recent)).toBe(true);
      // Nothing stays open after the purge: the next delete, of an old row, is refused.
      const another = await at(500);
      await expect(client.query(`DELETE FROM audit_event WHERE id = $1`, [another])).rejects.toThrow(/append-only/);
      await expect(client.query(`TRUNCATE audit_event`)).rejects.toThrow(/append-only/);
    });
  });
});
