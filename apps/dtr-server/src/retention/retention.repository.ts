import { query, type Queryable } from '@dtr/persistence';
import type { RetentionWindows } from '../config/app.config.js';

/** What one purge removed (or, in a dry run, would remove), per kind of row. */
export interface PurgeCounts {
  sessionTokens: number;
  completedForms: number;
  abandonedDrafts: number;
  sessions: number;
  launchAttempts: number;
  packageResources: number;
  packageSelections: number;
  auditEvents: number;
}

interface Step {
  key: keyof PurgeCounts;
  /** Deletes it, `RETURNING 1` per row (or one row `n` for the audit function). */
  remove: string;
  /** The statements' parameters, in milliseconds: the idle timeout and the window, as each statement uses them. */
  params: (idleMs: number, w: RetentionWindows) => number[];
}

const ms = (n: number) => `($${n}::bigint * interval '1 millisecond')`;
/** When a session ended: its lifetime, its revocation, or its last use plus the idle timeout, whichever came first. */
const ENDED_AT = `LEAST(s.expires_at, COALESCE(s.revoked_at, 'infinity'::timestamptz), s.last_seen_at + ${ms(1)})`;
const ENDED = `${ENDED_AT} <= now()`;
const FINISHED = `f.status IN ('completed', 'stopped')`;
/** Payers none of whose cached content was retrieved inside the window: their whole cache goes at once. */
const IDLE_PAYERS = `SELECT payer_id FROM package_resource GROUP BY payer_id HAVING max(retrieved_at) < now() - ${ms(1)}`;

/**
 * Every purge step, in order: a step's rows may hold back a later one (a session stays while forms of it remain).
 * A dry run runs the same statements in a transaction that is rolled back (see PurgeService).
 */
const STEPS: Step[] = [
  {
    // Tokens of an ended session are deleted at once (window 0), whatever else is kept.
    key: 'sessionTokens',
    remove: `DELETE FROM session_token t USING app_session s WHERE s.id_hash = t.session_id_hash AND ${ENDED}
             RETURNING 1`,
    params: (idle) => [idle],
  },
  {
    key: 'completedForms',
    remove: `DELETE FROM form_session f USING app_session s WHERE s.id_hash = f.session_id_hash AND ${ENDED}
             AND ${FINISHED} AND f.updated_at < now() - ${ms(2)} RETURNING 1`,
    params: (idle, w) => [idle, w.completedFormMs],
  },
  {
    key: 'abandonedDrafts',
    remove: `DELETE FROM form_session f USING app_session s WHERE s.id_hash = f.session_id_hash AND ${ENDED}
             AND NOT ${FINISHED} AND f.updated_at < now() - ${ms(2)} RETURNING 1`,
    params: (idle, w) => [idle, w.draftMs],
  },
  {
    // A session row outlives its window while forms of it are kept (they cascade with it).
    key: 'sessions',
    remove: `DELETE FROM app_session s WHERE ${ENDED_AT} < now() - ${ms(2)}
             AND NOT EXISTS (SELECT 1 FROM form_session f WHERE f.session_id_hash = s.id_hash) RETURNING 1`,
    params: (idle, w) => [idle, w.sessionMs],
  },
  {
    key: 'launchAttempts',
    remove: `DELETE FROM launch_attempt
             WHERE LEAST(expires_at, COALESCE(used_at, 'infinity'::timestamptz)) < now() - ${ms(1)}
             RETURNING 1`,
    params: (_idle, w) => [w.launchAttemptMs],
  },
  {
    key: 'packageResources',
    remove: `DELETE FROM package_resource WHERE payer_id IN (${IDLE_PAYERS}) RETURNING 1`,
    params: (_idle, w) => [w.packageMs],
  },
  {
    // Without its selection a session asks the payer for the whole package again: nothing is ever used stale.
    key: 'packageSelections',
    remove: `DELETE FROM package_selection WHERE retrieved_at < now() - ${ms(1)} RETURNING 1`,
    params: (_idle, w) => [w.packageMs],
  },
  {
    // Only through the database's own purge function, which refuses any cutoff less than 365 days ago.
    key: 'auditEvents',
    remove: `SELECT audit_event_purge(now() - ${ms(1)})::int AS n`,
    params: (_idle, w) => [w.auditMs],
  },
];

/**
 * The purge's SQL: what the retention windows let go, and the `scheduled_job` lease that makes one instance purge at a
 * time. Raw SQL here only; when and how the purge runs is PurgeService's.
 */
export class RetentionRepository {
  constructor(
    private readonly db: Queryable,
    private readonly idleMs: number,
  ) {}

  /** Deletes, step by step, each step one statement. */
  async purge(windows: RetentionWindows): Promise<PurgeCounts> {
    const counts = {} as PurgeCounts;
    for (const step of STEPS) {
      const params = step.params(this.idleMs, windows);
      if (step.key === 'auditEvents') {
        const [row] = await query<{ n: number }>(this.db, step.remove, params);
        counts[step.key] = row?.n ?? 0;
      } else {
        counts[step.key] = (await query(this.db, step.remove, params)).length;
      }
    }
    return counts;
  }

  /**
   * Claims the purge job's lease for `owner` unless another holder's lease is still running; with `dueAfterMs`, only
   * once that long has passed since the last purge finished (so N instances purge once per interval, not N times).
   * Returns whether it was claimed.
   */
  async claim(owner: string, leaseMs: number, dueAfterMs?: number): Promise<boolean> {
    const rows = await query(
      this.db,
      `UPDATE scheduled_job SET lease_owner = $1, lease_until = now() + ${ms(2)}, last_started_at = now()
       WHERE name = 'purge' AND (lease_until IS NULL OR lease_until < now())
         AND ($3::bigint IS NULL OR last_finished_at IS NULL OR last_finished_at <= now() - ${ms(3)})
       RETURNING name`,
      [owner, leaseMs, dueAfterMs ?? null],
    );
    return rows.length === 1;
  }

  /** Gives the lease back, recording what the run removed (counts only). */
  async release(owner: string, result: PurgeCounts | { error: string }): Promise<void> {
    await query(
      this.db,
      `UPDATE scheduled_job SET lease_owner = NULL, lease_until = NULL, last_finished_at = now(), last_result = $2
       WHERE name = 'purge' AND lease_owner = $1`,
      [owner, JSON.stringify(result)],
    );
  }
}
