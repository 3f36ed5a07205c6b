import 'reflect-metadata';
import { Command } from 'commander';
import { createDataSource, EmbeddedPostgresSupervisor, migrate } from '@dtr/persistence';
import { EhrRegistrationEntity, EhrTenantEntity, TenantRegistry } from '@dtr/smart';
import path from 'node:path';
import { ConfigError, loadAppConfig } from '../config/app.config.js';
import { registerPackageCommands } from './package.commands.js';
import { registerPrefillCommand } from './prefill.commands.js';
import { registerTenantCommands } from './tenant.commands.js';
import { secretBoxFromConfig } from '../smart/key-ring-secret-box.js';

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
    const config = loadAppConfig(process.env);
    let embedded: EmbeddedPostgresSupervisor | undefined;
    try {
      let url = config.databaseUrl;
      if (!url) {
        embedded = await EmbeddedPostgresSupervisor.start({ dataDir: path.join(config.dataDir, 'postgres'), database: 'dtr' });
        url = embedded.url;
      }
      const result = await migrate(url);
      process.stdout.write(
        result.applied.length > 0 ? `applied: ${result.applied.join(', ')}\n` : 'the database is up to date\n',
      );
    } finally {
      await embedded?.stop();
    }
  });

registerPackageCommands(program);
registerTenantCommands(program, async (fn) => {
  const config = loadAppConfig(process.env);
  let embedded: EmbeddedPostgresSupervisor | undefined;
  try {
    let url = config.databaseUrl;
    if (!url) {
      embedded = await EmbeddedPostgresSupervisor.start({ dataDir: path.join(config.dataDir, 'postgres'), database: 'dtr' });
      url = embedded.url;
    }
    await migrate(url);
    const dataSource = createDataSource({ url, entities: [EhrTenantEntity, EhrRegistrationEntity], poolMax: 2, applicationName: 'dtr-cli' });
    await dataSource.initialize();
    try {
      return await fn(new TenantRegistry(dataSource, secretBoxFromConfig(config), { allowInsecureLoopback: config.profile !== 'production' }));
    } finally {
      await dataSource.destroy();
    }
  } finally {
    await embedded?.stop();
  }
});
registerPrefillCommand(program);

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`dtr: ${error.message}\n`);
    process.exit(78);
  }
  process.stderr.write(`dtr: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
