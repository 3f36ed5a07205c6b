import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseUntrustedJson } from '@dtr/kernel';
import type { TenantRegistry } from '@dtr/smart';

/** Runs `fn` with a TenantRegistry on the configured database, then releases everything. */
export type WithRegistry = <T>(fn: (registry: TenantRegistry) => Promise<T>) => Promise<T>;

/**
 * `dtr tenant …`: register the EHRs allowed to launch us (the same rules as the admin API).
 *   dtr tenant put --file tenant.json     register or replace (secrets are read from the file, never printed)
 *   dtr tenant list                       list tenants (no secrets)
 *   dtr tenant show <id>
 *   dtr tenant remove <id>
 */
export function registerTenantCommands(program: Command, withRegistry: WithRegistry): Command {
  const tenant = program.command('tenant').description('EHR tenants (SMART iss) and their two client registrations');

  tenant
    .command('put')
    .description('register or replace a tenant from a JSON file (see README: Registering an EHR)')
    .requiredOption('--file <path>', 'tenant JSON; "-" reads standard input')
    .action(async (options: { file: string }) => {
      const text = readFileSync(options.file === '-' ? 0 : options.file, 'utf8');
      const input = parseUntrustedJson(text, { maxDepth: 16, maxBytes: 64 * 1024 });
      const view = await withRegistry((registry) => registry.upsert(input));
      process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
    });

  tenant
    .command('list')
    .description('list tenants (no secrets)')
    .action(async () => {
      const tenants = await withRegistry((registry) => registry.list());
      process.stdout.write(`${JSON.stringify(tenants, null, 2)}\n`);
    });

  tenant
    .command('show <id>')
    .description('one tenant (no secrets)')
    .action(async (id: string) => {
      const view = await withRegistry((registry) => registry.get(id));
      if (!view) {
        process.stderr.write(`dtr: no tenant ${id}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
    });

  tenant
    .command('remove <id>')
    .description('remove a tenant; its sessions end')
    .action(async (id: string) => {
      const removed = await withRegistry((registry) => registry.remove(id));
      if (!removed) {
        process.stderr.write(`dtr: no tenant ${id}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`removed ${id}\n`);
    });
  return tenant;
}
