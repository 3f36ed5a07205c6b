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

  it('lets only the retention purge delete, inside its own transaction', async () => {
    await withClient(async (client) => {
      const inserted = await client.query<{ id: string }>(
        `INSERT INTO audit_event (type_code, action, outcome) VALUES ('rest', 'R', '0') RETURNING id`,
      );
      const id = inserted.rows[0]!.id;
      await client.query('BEGIN');
      await client.query(`SET LOCAL dtr.audit_purge = 'on'`);
      const deleted = await client.query(`DELETE FROM audit_event WHERE id = $1`, [id]);
      await client.query('COMMIT');
      expect(deleted.rowCount).toBe(1);
      // The switch does not outlive the transaction.
      const other = await client.query<{ id: string }>(
        `INSERT INTO audit_event (type_code, action, outcome) VALUES ('rest', 'R', '0') RETURNING id`,
      );
      await expect(client.query(`DELETE FROM audit_event WHERE id = $1`, [other.rows[0]!.id])).rejects.toThrow(
        /append-only/,
      );
    });
  });
});
