import { execFileSync } from 'node:child_process';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import pg from 'pg';
import { EmbeddedPostgresSupervisor, migrate, quoteIdentifier } from '@dtr/persistence';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The run's database, migrated once. */
    databaseUrl: string;
    /** A maintenance database on the same server, for creating scratch databases. */
    adminDatabaseUrl: string;
    /** Whether the run uses an embedded server (no DATABASE_URL). */
    embeddedDatabase: boolean;
  }
}

interface RunState {
  databaseUrl: string;
  adminDatabaseUrl: string;
  embedded?: EmbeddedPostgresSupervisor;
  users: number;
}

const root = path.resolve(import.meta.dirname, '..');
const KEY = Symbol.for('dtr.test.database');
type GlobalWithState = typeof globalThis & { [KEY]?: Promise<RunState> };

/**
 * Gives the run one database: DATABASE_URL when set (its `public` schema is reset: point it at a
 * throwaway database), otherwise an embedded PostgreSQL in .data/test-postgres. Migrations run once.
 * Also builds dist/ once, for the e2e tier that runs the real server processes.
 * Every project of the run shares the same state (the setup may be invoked once per project).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const g = globalThis as GlobalWithState;
  g[KEY] ??= prepare();
  const state = await g[KEY];
  state.users++;
  project.provide('databaseUrl', state.databaseUrl);
  project.provide('adminDatabaseUrl', state.adminDatabaseUrl);
  project.provide('embeddedDatabase', state.embedded !== undefined);
  return async () => {
    state.users--;
    if (state.users === 0) {
      await state.embedded?.stop();
      delete g[KEY];
    }
  };
}

async function prepare(): Promise<RunState> {
  execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs')], { stdio: 'inherit' });
  const external = process.env['DATABASE_URL'];
  if (external) {
    const client = new pg.Client({ connectionString: external });
    await client.connect();
    try {
      await client.query('DROP SCHEMA IF EXISTS public CASCADE');
      await client.query('CREATE SCHEMA public');
    } finally {
      await client.end();
    }
    await migrate(external);
    const admin = new URL(external);
    admin.pathname = '/postgres';
    return { databaseUrl: external, adminDatabaseUrl: admin.toString(), users: 0 };
  }
  const embedded = await EmbeddedPostgresSupervisor.start({
    dataDir: path.join(root, '.data', 'test-postgres'),
    database: 'postgres',
  });
  const admin = new pg.Client({ connectionString: embedded.urlFor('postgres') });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${quoteIdentifier('dtr_test')} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${quoteIdentifier('dtr_test')}`);
  } finally {
    await admin.end();
  }
  const databaseUrl = embedded.urlFor('dtr_test');
  await migrate(databaseUrl);
  return { databaseUrl, adminDatabaseUrl: embedded.urlFor('postgres'), embedded, users: 0 };
}
