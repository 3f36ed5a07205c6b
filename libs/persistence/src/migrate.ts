import { DtrError } from '@dtr/kernel';
import { createDataSource } from './data-source.js';

/** Key of the PostgreSQL advisory lock that serialises migrations across instances ("dtr-migrate"). */
const MIGRATION_LOCK_KEY = 0x647472_6d69;

export interface MigrationResult {
  applied: string[];
  waitedForLockMs: number;
}

/**
 * Applies pending migrations under a session-level advisory lock, so any number of instances can start
 * at once on one database: the first migrates, the others wait and then find nothing to do.
 * TypeORM takes no lock of its own while migrating.
 */
export async function migrate(url: string): Promise<MigrationResult> {
  const dataSource = createDataSource({ url, poolMax: 2, applicationName: 'dtr-migrate' });
  try {
    await dataSource.initialize();
  } catch (cause) {
    throw new DtrError('NOT_READY', 'cannot connect to the database to run migrations', { cause });
  }
  const lockRunner = dataSource.createQueryRunner();
  try {
    await lockRunner.connect();
    const started = Date.now();
    await lockRunner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    const waitedForLockMs = Date.now() - started;
    try {
      const applied = await dataSource.runMigrations({ transaction: 'each' });
      return { applied: applied.map((m) => m.name), waitedForLockMs };
    } finally {
      await lockRunner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    await lockRunner.release();
    await dataSource.destroy();
  }
}
