import { DataSource, type DataSourceOptions, type MigrationInterface } from 'typeorm';
import { MIGRATIONS } from './migrations/index.js';

export interface DatabaseOptions {
  url: string;
  /** Entity classes, listed explicitly by the composition root. */
  entities?: Function[];
  poolMax?: number;
  applicationName?: string;
}

/** The one place TypeORM options are assembled: migrations only, never `synchronize`. */
export function buildDataSourceOptions(options: DatabaseOptions): DataSourceOptions {
  return {
    type: 'postgres',
    url: options.url,
    entities: options.entities ?? [],
    migrations: MIGRATIONS as Array<new () => MigrationInterface>,
    migrationsTableName: 'schema_migration',
    synchronize: false,
    migrationsRun: false,
    // Extensions are created by migrations (under the lock), never implicitly at connect time.
    installExtensions: false,
    logging: false,
    applicationName: options.applicationName ?? 'dtr-server',
    extra: { max: options.poolMax ?? 10, connectionTimeoutMillis: 5000 },
  };
}

export function createDataSource(options: DatabaseOptions): DataSource {
  return new DataSource(buildDataSourceOptions(options));
}
