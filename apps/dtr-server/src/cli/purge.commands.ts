import type { Command } from 'commander';
import type { AppConfig } from '../config/app.config.js';
import type { Services } from '../compose-services.js';
import { PurgeService } from '../retention/purge.service.js';
import type { PurgeCounts } from '../retention/retention.repository.js';

/** Runs `fn` with the composed services and the configuration on the configured (migrated) database. */
type WithServices = <T>(fn: (services: Services, config: AppConfig) => Promise<T>) => Promise<T>;

const LABELS: Record<keyof PurgeCounts, string> = {
  sessionTokens: 'tokens of ended sessions',
  completedForms: 'completed or stopped forms past their window',
  abandonedDrafts: 'abandoned drafts past their window',
  sessions: 'ended sessions past their window',
  launchAttempts: 'launch attempts past their window',
  packageResources: 'cached package resources of payers idle past the window',
  packageSelections: 'remembered package selections past the window',
  auditEvents: 'audit events past the audit window',
};

/**
 * `dtr purge [--dry-run]`: the retention purge the server runs on its interval, now; prints what it removed (or would
 * remove) per kind of row. Refused while another instance is purging.
 */
export function registerPurgeCommand(program: Command, withServices: WithServices): void {
  program
    .command('purge')
    .description('delete what the retention windows let go (see README: Retention); prints counts, audited')
    .option('--dry-run', 'only count what would be deleted')
    .action(async (options: { dryRun?: boolean }) => {
      const outcome = await withServices((services, config) =>
        new PurgeService(services.dataSource, services.audit, {
          windows: config.retention,
          idleMs: config.sessionIdleMs,
          actor: { type: 'operator', who: process.env['USER'] ?? 'cli' },
        }).run({ dryRun: options.dryRun ?? false }),
      );
      if (!outcome.ran) throw new Error('another instance is purging now; try again when it has finished');
      const width = Math.max(...Object.values(LABELS).map((l) => l.length));
      process.stdout.write(options.dryRun ? 'dry run: nothing deleted; would delete\n' : 'deleted\n');
      for (const [key, label] of Object.entries(LABELS) as Array<[keyof PurgeCounts, string]>)
        process.stdout.write(`  ${label.padEnd(width)}  ${outcome.counts[key]}\n`);
    });
}
