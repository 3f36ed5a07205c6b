export * from './data-source.js';
export * from './embedded-postgres.supervisor.js';
export * from './migrate.js';
export { MIGRATIONS } from './migrations/index.js';
export * from './query-result.js';
export * from './query.js';
