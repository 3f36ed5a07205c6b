import type { OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import type { AuditLog } from '@dtr/audit';
import type { AttemptHook, DeliverySender, Outbox } from '@dtr/disclosure';
import type { JsonLogger } from '../../logging/json-logger.js';

/**
 * Delivers queued submissions in the background of every instance: drains the outbox when woken (a new submission)
 * and every `pollMs` (retries coming due, rows a crashed instance left). Several instances drain the same outbox
 * safely (row claims with SKIP LOCKED). Each attempt and the payer's final answer are audited in the transaction that
 * records them.
 */
export class DeliveryWorker implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly rounds: Array<() => Promise<void>> = [];

  constructor(
    private readonly outbox: Outbox,
    private readonly sender: DeliverySender,
    private readonly audit: AuditLog,
    private readonly logger: JsonLogger,
    private readonly pollMs: number,
  ) {}

  onApplicationBootstrap(): void {
    this.schedule(0);
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** Work done at the start of every round (finishing write-backs an instance left half-way). */
  beforeEachRound(work: () => Promise<void>): void {
    this.rounds.push(work);
  }

  /** Drain now (a submission was just queued). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.drain().finally(() => {
        this.running = undefined;
        this.schedule(this.again ? 0 : this.pollMs);
        this.again = false;
      });
    }, ms);
    this.timer.unref();
  }

  private async drain(): Promise<void> {
    try {
      for (const work of this.rounds) await work();
      await this.outbox.drain(this.sender, this.hook);
    } catch (error) {
      // The database may be restarting: the rows stay and the next round picks them up.
      this.logger.entry(
        'warn',
        'delivery round failed; retrying later',
        { reason: error instanceof Error ? error.message : 'error' },
        'DeliveryWorker',
      );
    }
  }

  private readonly hook: AttemptHook = async (tx, submission, attempt, result, final) => {
    const base = {
      tenantId: submission.tenantId,
      sessionIdHash: submission.sessionIdHash,
      patientHash: submission.patientHash,
      submissionId: submission.id,
      agents: [
        { type: 'system' as const, who: 'dtr-backend', requestor: true },
        { type: 'payer' as const, who: submission.payerId, requestor: false },
      ],
    };
    await this.audit.record(
      {
        ...base,
        kind: 'delivery-attempt',
        action: 'C',
        outcome: result.kind === 'accepted' ? '0' : final === 'dead' ? '8' : '4',
        entities: [
          { what: submission.id, role: '20', detail: { attempt, route: submission.route, sha256: submission.sha256 } },
        ],
        detail: {
          result: result.kind,
          ...('status' in result && result.status !== undefined ? { status: result.status } : {}),
          next: final,
        },
      },
      tx,
    );
    if (final !== 'retry')
      await this.audit.record(
        {
          ...base,
          kind: 'payer-answer',
          action: 'E',
          outcome: final === 'delivered' ? '0' : '8',
          entities: [{ what: submission.id, role: '3' }],
          detail: { state: final, ...(result.kind === 'accepted' ? { outcome: result.outcome } : {}) },
        },
        tx,
      );
  };
}
