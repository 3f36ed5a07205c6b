import type { Command } from 'commander';
import { toFhirAuditEvent } from '@dtr/audit';
import type { SubmissionState } from '@dtr/disclosure';
import { auditFilterOf } from '../audit/audit.controller.js';
import type { Services } from '../compose-services.js';
import { submissionView } from '../dtr/disclosure/submission-view.js';

/** Runs `fn` with the composed services on the configured (migrated) database, then releases it. */
type WithServices = <T>(fn: (services: Services) => Promise<T>) => Promise<T>;

const STATES: SubmissionState[] = ['writing-back', 'write-back-failed', 'queued', 'delivered', 'dead'];

/**
 * `dtr submissions …` and `dtr audit …`: what operators need of disclosure.
 *   dtr submissions list [--state dead]   submissions and their states (no content)
 *   dtr submissions retry <id>            a dead letter delivered again (a running server sends it)
 *   dtr audit export [--patient p] [--submission s] [--from d] [--to d]   NDJSON of FHIR AuditEvents
 */
export function registerDisclosureCommands(program: Command, withServices: WithServices): void {
  const submissions = program.command('submissions').description('payer-bound submissions (outbox)');

  submissions
    .command('list')
    .description('submissions with their state, attempts and last problem (never their content)')
    .option('--state <state>', `only this state (${STATES.join(', ')})`)
    .action(async (options: { state?: string }) => {
      if (options.state !== undefined && !STATES.includes(options.state as SubmissionState))
        throw new Error(`--state must be one of ${STATES.join(', ')}`);
      const list = await withServices((services) =>
        services.submissions.list(options.state ? { state: options.state as SubmissionState } : {}),
      );
      const rows = list.map((s) => {
        const { choices: _choices, ...view } = submissionView(s);
        return view;
      });
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    });

  submissions
    .command('retry <id>')
    .description('deliver a dead-lettered submission again (same bytes, same idempotency key); audited')
    .action(async (id: string) => {
      const done = await withServices(async ({ submissions: repo, outbox, audit, dataSource }) => {
        const found = await repo.get(id);
        if (!found) throw new Error(`no submission ${id}`);
        if (found.state !== 'dead')
          throw new Error(`submission ${id} is ${found.state}; only a dead letter is retried`);
        return dataSource.transaction(async (tx) => {
          const retried = await outbox.retry(id, tx);
          if (retried)
            await audit.record(
              {
                kind: 'submission-retry',
                action: 'E',
                outcome: '0',
                tenantId: found.tenantId,
                patientHash: found.patientHash,
                submissionId: id,
                agents: [{ type: 'operator', who: process.env['USER'] ?? 'cli', requestor: true }],
                entities: [{ what: id, role: '20' }],
              },
              tx,
            );
          return retried;
        });
      });
      process.stdout.write(
        done ? `submission ${id} queued again; a running server delivers it\n` : `nothing to retry\n`,
      );
    });

  program
    .command('audit')
    .description('the audit trail')
    .command('export')
    .description('audit events as FHIR AuditEvent resources, one JSON per line (oldest first)')
    .option('--patient <id>', 'events of this patient (hashed here; events never hold the id)')
    .option('--session <hash>', 'events of this session')
    .option('--submission <id>', 'events of this submission')
    .option('--from <date>', 'ISO date or instant, inclusive')
    .option('--to <date>', 'ISO date or instant, exclusive')
    .action(async (options: Record<string, string | undefined>) => {
      await withServices(async ({ audit }) => {
        const filter = auditFilterOf(Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)));
        let after: number | undefined;
        for (;;) {
          const page = await audit.search({
            ...filter,
            limit: 1000,
            ...(after !== undefined ? { afterSeq: after } : {}),
          });
          for (const event of page) process.stdout.write(`${JSON.stringify(toFhirAuditEvent(event, 'dtr-backend'))}\n`);
          if (page.length < 1000) break;
          after = page.at(-1)!.seq;
        }
      });
    });
}
