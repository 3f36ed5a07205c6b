// The database of a script run: with DATABASE_URL, a scratch database of the run's own on that server (dropped at the
// end); otherwise an embedded PostgreSQL in `dir`. Either way `{ url, stop() }`.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { freePort, root } from './harness.mjs';

export async function runDatabase(dir, label) {
  const external = process.env.DATABASE_URL;
  if (!external) {
    const { EmbeddedPostgresSupervisor } = await import(
      pathToFileURL(path.join(root, 'dist', 'libs/persistence/src/index.js')).href
    );
    return EmbeddedPostgresSupervisor.start({ dataDir: path.join(dir, 'pg'), database: 'dtr', port: await freePort() });
  }
  const name = `dtr_${label}_${randomBytes(4).toString('hex')}`;
  const admin = new URL(external);
  admin.pathname = '/postgres';
  const run = async (sql) => {
    const c = new pg.Client({ connectionString: admin.toString() });
    await c.connect();
    await c.query(sql).finally(() => c.end());
  };
  await run(`CREATE DATABASE ${name}`);
  const url = new URL(external);
  url.pathname = `/${name}`;
  return { url: url.toString(), stop: () => run(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}
