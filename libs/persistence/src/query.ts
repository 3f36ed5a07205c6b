import { rowsOf } from './query-result.js';

/** Anything that runs raw SQL: a DataSource, an EntityManager inside a transaction, a QueryRunner. */
export interface Queryable {
  query(sql: string, parameters?: unknown[]): Promise<unknown>;
}

/**
 * The one way repositories run SQL: parameterised text in, typed rows out (the rows of a SELECT, or of
 * `INSERT/UPDATE/DELETE … RETURNING`; none otherwise).
 */
export async function query<T>(db: Queryable, sql: string, parameters: unknown[] = []): Promise<T[]> {
  return rowsOf<T>(await db.query(sql, parameters));
}
