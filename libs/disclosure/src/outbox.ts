import type { Clock } from '@dtr/kernel';
import { query, type Queryable } from '@dtr/persistence';
import type { DataSource } from 'typeorm';
import type { Submission, SubmissionRepository } from './submission.repository.js';

/** What one delivery attempt came to. */
export type DeliveryResult =
  /** The payer took it (2xx): its answer is kept and shown. */
  | { kind: 'accepted'; outcome: string; answer: unknown; status: number }
  /** Worth another try: 5xx, 429, a timeout, a dropped connection. */
  | { kind: 'retry'; error: string; status?: number; retryAfterMs?: number }
  /** The payer refused the content (4xx other than 429): retrying the same bytes cannot help. */
  | { kind: 'rejected'; error: string; status: number; answer?: unknown };

export interface DeliverySender {
  send(submission: Submission): Promise<DeliveryResult>;
}

export interface OutboxOptions {
  /** Attempts before the dead letter (default 8). */
  maxAttempts?: number;
  /** First retry delay; doubles each attempt with jitter (default 1 s). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** How long a claimed row is ours; a crashed sender's row is claimed again after it (default 60 s). */
  leaseMs?: number;
}

/** Called after each attempt, in the transaction that records it (the audit record of the attempt). */
export type AttemptHook = (
  tx: Queryable,
  submission: Submission,
  attempt: number,
  result: DeliveryResult,
  final: 'delivered' | 'dead' | 'retry',
) => Promise<void>;

interface Claimed {
  submission_id: string;
  attempts: number;
  locked_until: Date;
}

/**
 * The outbox, PostgreSQL's `FOR UPDATE SKIP LOCKED` as the queue: any number of instances claim different rows; a
 * claimed row is leased, so a sender that dies mid-flight leaves it to be claimed again when the lease runs out. The
 * same submission is then sent again with the same idempotency key (its id): the payer answers the first result, so
 * a payer that honours the key receives it once in effect. Rows are only ever written by `SubmissionRepository.queue`,
 * after the EHR holds the verified copy.
 */
export class Outbox {
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly leaseMs: number;

  constructor(
    private readonly dataSource: DataSource,
    private readonly submissions: SubmissionRepository,
    private readonly clock: Clock,
    options: OutboxOptions = {},
  ) {
    this.maxAttempts = options.maxAttempts ?? 8;
    this.baseDelayMs = options.baseDelayMs ?? 1_000;
    this.maxDelayMs = options.maxDelayMs ?? 300_000;
    this.leaseMs = options.leaseMs ?? 60_000;
  }

  /** Claims one due row, or none. */
  async claim(): Promise<{ submission: Submission; attempt: number; lease: Date } | undefined> {
    const claimed = await this.dataSource.transaction(async (tx) => {
      const now = this.clock.now();
      const [row] = await query<Claimed>(
        tx,
        `SELECT submission_id, attempts, locked_until FROM outbox
         WHERE state = 'ready' AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until < $1)
         ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED`,
        [now],
      );
      if (!row) return undefined;
      const lease = new Date(now.getTime() + this.leaseMs);
      await query(
        tx,
        `UPDATE outbox SET attempts = attempts + 1, locked_until = $2, updated_at = $3 WHERE submission_id = $1`,
        [row.submission_id, lease, now],
      );
      return { id: row.submission_id, attempt: row.attempts + 1, lease };
    });
    if (!claimed) return undefined;
    const submission = await this.submissions.get(claimed.id);
    return submission ? { submission, attempt: claimed.attempt, lease: claimed.lease } : undefined;
  }

  /** Records an attempt, if the lease is still ours (a slower twin's late answer changes nothing). */
  async record(
    claimed: { submission: Submission; attempt: number; lease: Date },
    result: DeliveryResult,
    hook?: AttemptHook,
  ): Promise<'delivered' | 'dead' | 'retry' | 'lost-lease'> {
    const { submission, attempt, lease } = claimed;
    const final =
      result.kind === 'accepted'
        ? 'delivered'
        : result.kind === 'rejected' || attempt >= this.maxAttempts
          ? 'dead'
          : 'retry';
    return this.dataSource.transaction(async (tx) => {
      const now = this.clock.now();
      const error = result.kind === 'accepted' ? null : result.error.slice(0, 500);
      const next =
        final === 'retry'
          ? new Date(
              now.getTime() + Math.max(this.backoff(attempt), result.kind === 'retry' ? (result.retryAfterMs ?? 0) : 0),
            )
          : now;
      const updated = await query<{ submission_id: string }>(
        tx,
        `UPDATE outbox SET state = $2, next_attempt_at = $3, locked_until = NULL, last_error = $4, updated_at = $5
         WHERE submission_id = $1 AND state = 'ready' AND locked_until = $6 RETURNING submission_id`,
        [submission.id, final === 'delivered' ? 'done' : final === 'dead' ? 'dead' : 'ready', next, error, now, lease],
      );
      if (updated.length === 0) return 'lost-lease';
      if (final !== 'retry') {
        const answer = result.kind === 'retry' ? undefined : result.answer;
        await query(
          tx,
          `UPDATE submission SET state = $2, payer_outcome = $3, payer_answer_enc = $4, last_error = $5, updated_at = $6
           WHERE id = $1`,
          [
            submission.id,
            final,
            result.kind === 'accepted' ? result.outcome : result.kind === 'rejected' ? 'rejected' : 'undelivered',
            answer === undefined ? null : this.submissions.sealAnswer(submission.id, answer),
            error,
            now,
          ],
        );
      } else {
        await query(tx, `UPDATE submission SET last_error = $2, updated_at = $3 WHERE id = $1`, [
          submission.id,
          error,
          now,
        ]);
      }
      if (hook) await hook(tx, submission, attempt, result, final);
      return final;
    });
  }

  /** Claims, sends and records due rows until none is due; returns how many attempts were made. */
  async drain(sender: DeliverySender, hook?: AttemptHook, limit = 100): Promise<number> {
    let attempts = 0;
    while (attempts < limit) {
      const claimed = await this.claim();
      if (!claimed) break;
      attempts++;
      let result: DeliveryResult;
      try {
        result = await sender.send(claimed.submission);
      } catch (error) {
        result = { kind: 'retry', error: error instanceof Error ? error.message : 'delivery failed' };
      }
      await this.record(claimed, result, hook);
    }
    return attempts;
  }

  /** An operator's retry of a dead letter: ready again now, attempts counted afresh. */
  async retry(submissionId: string, tx?: Queryable): Promise<boolean> {
    const run = async (db: Queryable) => {
      const now = this.clock.now();
      const rows = await query<{ submission_id: string }>(
        db,
        `UPDATE outbox SET state = 'ready', attempts = 0, next_attempt_at = $2, locked_until = NULL, updated_at = $2
         WHERE submission_id = $1 AND state = 'dead' RETURNING submission_id`,
        [submissionId, now],
      );
      if (rows.length === 0) return false;
      await query(db, `UPDATE submission SET state = 'queued', updated_at = $2 WHERE id = $1 AND state = 'dead'`, [
        submissionId,
        now,
      ]);
      return true;
    };
    return tx ? run(tx) : this.dataSource.transaction(run);
  }

  /** Counts by outbox state (for health and the CLI). */
  async counts(): Promise<Record<string, number>> {
    const rows = await query<{ state: string; n: string }>(
      this.dataSource,
      `SELECT state, count(*) AS n FROM outbox GROUP BY state`,
    );
    return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
  }

  private backoff(attempt: number): number {
    const exp = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
    return Math.round(exp / 2 + Math.random() * (exp / 2));
  }
}
