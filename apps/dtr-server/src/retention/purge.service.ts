import { randomUUID } from 'node:crypto';
import type { OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import type { AuditLog } from '@dtr/audit';
import { DtrError } from '@dtr/kernel';
import type { DataSource } from 'typeorm';
import type { RetentionWindows } from '../config/app.config.js';
import type { JsonLogger } from '../logging/json-logger.js';
import { type PurgeCounts, RetentionRepository } from './retention.repository.js';

/** How long one purge may hold the job before another instance may take it over (a crashed holder). */
const LEASE_MS = 15 * 60_000;

export interface PurgeOptions {
  windows: RetentionWindows;
  idleMs: number;
  /** Who runs it, for the audit record: the server, or an operator at the command line. */
  actor: { type: 'system' | 'operator'; who: string };
}

export type PurgeOutcome =
  { ran: true; dryRun: boolean; counts: PurgeCounts } | { ran: false; reason: 'busy' | 'not-due' };

/**
 * The retention purge: deletes what the windows let go (see RetentionRepository), holding the `scheduled_job` lease
 * so one instance purges at a time, and audits each run with its counts (never ids or content).
 */
export class PurgeService {
  private readonly repository: RetentionRepository;
  private readonly owner = `${process.pid}:${randomUUID()}`;

  constructor(
    private readonly dataSource: DataSource,
    private readonly audit: AuditLog,
    private readonly options: PurgeOptions,
  ) {
    this.repository = new RetentionRepository(dataSource, options.idleMs);
  }

  /**
   * Runs the purge. A dry run only counts (no lease, nothing audited, nothing deleted). `dueAfterMs` skips the run when the last one
   * finished less than that long ago (the server's interval); a lease held elsewhere skips it too.
   */
  async run(options: { dryRun?: boolean; dueAfterMs?: number } = {}): Promise<PurgeOutcome> {
    if (options.dryRun) return { ran: true, dryRun: true, counts: await this.dryRun() };
    if (!(await this.repository.claim(this.owner, LEASE_MS, options.dueAfterMs))) {
      return { ran: false, reason: options.dueAfterMs === undefined ? 'busy' : 'not-due' };
    }
    let counts: PurgeCounts;
    try {
      counts = await this.repository.purge(this.options.windows);
    } catch (error) {
      await this.repository.release(this.owner, { error: error instanceof Error ? error.name : 'error' });
      throw error;
    }
    await this.dataSource.transaction(async (tx) => {
      await this.audit.record(
        {
          kind: 'retention-purge',
          action: 'D',
          outcome: '0',
          agents: [{ ...this.options.actor, requestor: true }],
          entities: [{ what: 'retention-purge', role: '20', detail: { ...counts } }],
          detail: { ...counts },
        },
        tx,
      );
      await new RetentionRepository(tx, this.options.idleMs).release(this.owner, counts);
    });
    return { ran: true, dryRun: false, counts };
  }

  /** The purge's own statements in one transaction, rolled back: exactly what a run now would delete. */
  private async dryRun(): Promise<PurgeCounts> {
    let counts: PurgeCounts | undefined;
    const rollback = new Error('dry run');
    await this.dataSource
      .transaction(async (tx) => {
        counts = await new RetentionRepository(tx, this.options.idleMs).purge(this.options.windows);
        throw rollback;
      })
      .catch((error: unknown) => {
        if (error !== rollback) throw error;
      });
    return counts!;
  }
}

/**
 * Runs the purge in the background of every instance: it looks every `checkMs` whether a purge is due (the last one
 * finished `intervalMs` ago or more) and whether no other instance holds it; the database decides, so N instances purge
 * once per interval between them. The first look is at start-up.
 */
export class PurgeWorker implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly purge: PurgeService,
    private readonly logger: JsonLogger,
    private readonly intervalMs: number,
  ) {}

  onApplicationBootstrap(): void {
    this.schedule(0);
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.round().finally(() => {
        this.running = undefined;
        this.schedule(Math.min(this.intervalMs, 60_000));
      });
    }, ms);
    this.timer.unref();
  }

  private async round(): Promise<void> {
    try {
      const outcome = await this.purge.run({ dueAfterMs: this.intervalMs });
      if (outcome.ran) this.logger.entry('info', 'retention purge finished', { ...outcome.counts }, 'PurgeWorker');
    } catch (error) {
      // The database may be restarting: the next round tries again (a lease left behind runs out).
      this.logger.entry(
        'warn',
        'retention purge failed; retrying later',
        { reason: error instanceof DtrError ? error.code : error instanceof Error ? error.message : 'error' },
        'PurgeWorker',
      );
    }
  }
}
