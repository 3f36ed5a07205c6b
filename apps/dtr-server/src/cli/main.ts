import 'reflect-metadata';
import { Command } from 'commander';
import { createDataSource, EmbeddedPostgresSupervisor, migrate } from '@dtr/persistence';
import { readFileSync } from 'node:fs';
import { parseUntrustedJson } from '@dtr/kernel';
import path from 'node:path';
import { type AppConfig, loadAppConfig } from '../config/app.config.js';
import { exitOnConfigError } from '../config/config-exit.js';
import { registerDisclosureCommands } from './disclosure.commands.js';
import { registerPackageCommands } from './package.commands.js';
import { registerPrefillCommand } from './prefill.commands.js';
import { registerPurgeCommand } from './purge.commands.js';
import { registerTenantCommands } from './tenant.commands.js';
import { registerUdapCommands } from './udap.commands.js';
import { composeServices, type Services } from '../compose-services.js';

/**
 * The `dtr` command line. Each command reads the same configuration as the server (environment),
 * so `DATABASE_URL` (or the embedded database in DTR_DATA_DIR) applies here too.
 */
const program = new Command('dtr').description('DTR backend command line').showHelpAfterError();

program
  .command('config')
  .description('validate the configuration in the environment and print it (secrets masked)')
  .action(() => {
    const config = loadAppConfig(process.env);
    const shown = {
      ...config,
      databaseUrl: config.databaseUrl ? config.databaseUrl.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@') : '(embedded)',
      encryptionKeys: config.encryptionKeys ? [...config.encryptionKeys.keys()].map((kid) => `${kid}:***`) : '(none)',
      adminToken: config.adminToken ? '***' : '(admin API off)',
    };
    process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
  });

program
  .command('migrate')
  .description('apply pending database migrations (under the same advisory lock the server uses)')
  .action(async () => {
    const result = await withDatabaseUrl((url) => migrate(url));
    process.stdout.write(
      result.applied.length > 0 ? `applied: ${result.applied.join(', ')}\n` : 'the database is up to date\n',
    );
  });

registerPackageCommands(program);
/** Runs `fn` with the configured database's URL: DATABASE_URL, or the embedded server started for the command. */
async function withDatabaseUrl<T>(
  fn: (url: string, config: ReturnType<typeof loadAppConfig>) => Promise<T>,
): Promise<T> {
  const config = loadAppConfig(process.env);
  if (config.databaseUrl) return fn(config.databaseUrl, config);
  const embedded = await EmbeddedPostgresSupervisor.start({
    dataDir: path.join(config.dataDir, 'postgres'),
    database: 'dtr',
  });
  try {
    return await fn(embedded.url, config);
  } finally {
    await embedded.stop();
  }
}

/** Runs `fn` with the services composed as the server composes them, on the configured database (migrated). */
function withServices<T>(fn: (services: Services, config: AppConfig) => Promise<T>): Promise<T> {
  return withDatabaseUrl(async (url, config) => {
    await migrate(url);
    const dataSource = createDataSource({ url, poolMax: 2, applicationName: 'dtr-cli' });
    await dataSource.initialize();
    try {
      return await fn(composeServices(dataSource, config), config);
    } finally {
      await dataSource.destroy();
    }
  });
}

const tenant = registerTenantCommands(program, (fn) => withServices((services) => fn(services.tenants)));

const payer = program.command('payer').description('payers we call with SMART Backend Services');
payer
  .command('put')
  .description('register or replace a payer from a JSON file (see README: Registering a payer)')
  .requiredOption('--file <path>', 'payer JSON; "-" reads standard input')
  .action(async (options: { file: string }) => {
    const input = parseUntrustedJson(readFileSync(options.file === '-' ? 0 : options.file, 'utf8'), {
      maxDepth: 16,
      maxBytes: 64 * 1024,
    });
    const view = await withServices((services) => services.payers.upsert(input));
    process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
  });
payer
  .command('list')
  .description('list registered payers')
  .action(async () => {
    const list = await withServices((services) => services.payers.list());
    process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
  });

const keys = program
  .command('keys')
  .description('our private_key_jwt signing keys (public parts at /.well-known/jwks.json)');
const algOption = (value: string) => {
  if (value !== 'RS384' && value !== 'ES384') throw new Error('--alg must be RS384 or ES384');
  return value as 'RS384' | 'ES384';
};
for (const [name, description] of [
  ['generate', 'create a new active key (the previous one of that algorithm keeps being published while it retires)'],
  ['rotate', 'same as generate: a new active key, the old one retiring for 24 h'],
] as const) {
  keys
    .command(name)
    .description(description)
    .requiredOption('--alg <alg>', 'RS384 or ES384', algOption)
    .action(async (options: { alg: 'RS384' | 'ES384' }) => {
      const key = await withServices((services) => services.signingKeys.generate(options.alg));
      process.stdout.write(`${JSON.stringify(key)}\n`);
    });
}
keys
  .command('list')
  .description('kid, algorithm, status and dates of every key (never private parts)')
  .action(async () => {
    const list = await withServices((services) => services.signingKeys.list());
    process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
  });
registerPrefillCommand(program);
registerDisclosureCommands(program, withServices);
registerPurgeCommand(program, withServices);
registerUdapCommands(program, withServices, { tenant, payer });

program.parseAsync(process.argv).catch((error: unknown) => {
  exitOnConfigError('dtr', error);
  process.stderr.write(`dtr: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
