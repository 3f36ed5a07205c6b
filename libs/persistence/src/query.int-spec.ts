import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { DataSource } from 'typeorm';
import { createScratchDatabase, type ScratchDatabase } from '../../../test/support/databases.js';
import { createDataSource } from './data-source.js';
import { query } from './query.js';

describe('query (real PostgreSQL)', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_query');
    dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    await dataSource.query('CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL)');
  });
  afterAll(async () => {
    await dataSource?.destroy();
    await db?.drop();
  });

  it('returns typed rows for SELECT and for INSERT/UPDATE/DELETE … RETURNING, and none without RETURNING', async () => {
    expect(
      await query<{ id: number }>(dataSource, 'INSERT INTO item VALUES ($1, $2), ($3, $4) RETURNING id', [
        1,
        'a',
        2,
        'b',
      ]),
    ).toEqual([{ id: 1 }, { id: 2 }]);
    expect(await query(dataSource, `UPDATE item SET name = 'c' WHERE id = 9`)).toEqual([]);
    expect(
      await query<{ name: string }>(dataSource, 'UPDATE item SET name = $1 WHERE id = $2 RETURNING name', ['z', 2]),
    ).toEqual([{ name: 'z' }]);
    expect(await query<{ id: number; name: string }>(dataSource, 'SELECT id, name FROM item ORDER BY id')).toEqual([
      { id: 1, name: 'a' },
      { id: 2, name: 'z' },
    ]);
    expect(await query<{ id: number }>(dataSource, 'DELETE FROM item WHERE id = $1 RETURNING id', [1])).toEqual([
      { id: 1 },
    ]);
  });

  it('runs inside a transaction through its EntityManager, and a failure rolls everything back', async () => {
    await expect(
      dataSource.transaction(async (manager) => {
        await query(manager, 'INSERT INTO item VALUES ($1, $2)', [10, 'x']);
        await query(manager, 'INSERT INTO item VALUES ($1, $2)', [10, 'duplicate']);
      }),
    ).rejects.toThrow(/duplicate key/);
    expect(await query(dataSource, 'SELECT id FROM item WHERE id = 10')).toEqual([]);
  });
});
