import { randomUUID } from 'node:crypto';
import type { Clock } from '@dtr/kernel';
import { query, type Queryable } from '@dtr/persistence';
import type { DataSource } from 'typeorm';
import type { SubmissionRoute } from './payer-routes.js';

/** Seals PHI at rest (the key ring's SecretBox satisfies it). */
export interface Sealer {
  seal(plaintext: string, aad: string): string;
  open(ciphertext: string, aad: string): string;
}

export type SubmissionState = 'writing-back' | 'write-back-failed' | 'queued' | 'delivered' | 'dead';
export type Choice = 'include' | 'withhold';

export interface NewSubmission {
  formId: string;
  payerId: string;
  tenantId: string;
  sessionIdHash: string;
  patientHash: string;
  route: SubmissionRoute;
  igVersion: string;
  questionnaireUrl: string;
  qrEhrId: string;
  qrVersionId?: string;
  /** Per sensitive item (linkId) or labelled resource (`Type/id`): the clinician's choice. */
  choices: Record<string, Choice>;
  /** The exact bytes that will be sent (UTF-8 JSON). */
  body: string;
  sha256: string;
  sha1: string;
  /** opaque `Type/id` → EHR `Type/id`. */
  idMap: Record<string, string>;
  /** The request path under the payer's base. */
  path: string;
}

export interface Submission extends Omit<NewSubmission, 'path'> {
  id: string;
  path: string;
  state: SubmissionState;
  documentReference?: string;
  provenance?: string;
  payerOutcome?: string;
  payerAnswer?: unknown;
  lastError?: string;
  attempts: number;
  createdAt: Date;
  updatedAt: Date;
}

interface Row {
  id: string;
  form_id: string;
  payer_id: string;
  tenant_id: string;
  session_id_hash: string;
  patient_hash: string;
  route: SubmissionRoute;
  ig_version: string;
  questionnaire_url: string;
  qr_ehr_id: string;
  qr_version_id: string | null;
  state: SubmissionState;
  choices: Record<string, Choice>;
  bundle_enc: string;
  sha256: string;
  sha1: string;
  id_map_enc: string;
  document_reference: string | null;
  provenance: string | null;
  payer_outcome: string | null;
  payer_answer_enc: string | null;
  last_error: string | null;
  created_at: Date;
  updated_at: Date;
  attempts: number | null;
}

const SELECT = `SELECT s.*, o.attempts FROM submission s LEFT JOIN outbox o ON o.submission_id = s.id`;

/**
 * Submissions: one per questionnaire response and payer (a second "Send" finds the first). The bytes, the opaque-id
 * map and the payer's answer are sealed, with the submission id as associated data.
 */
export class SubmissionRepository {
  constructor(
    private readonly dataSource: DataSource,
    private readonly sealer: Sealer,
    private readonly clock: Clock,
  ) {}

  /** Creates the submission, or returns the one this response already has for this payer (`created: false`). */
  async createOrGet(input: NewSubmission): Promise<{ submission: Submission; created: boolean }> {
    const id = randomUUID();
    const now = this.clock.now();
    const sealed = this.sealer.seal(JSON.stringify({ path: input.path, body: input.body }), `submission:${id}:body`);
    const inserted = await query<{ id: string }>(
      this.dataSource,
      `INSERT INTO submission (id, form_id, payer_id, tenant_id, session_id_hash, patient_hash, route, ig_version,
         questionnaire_url, qr_ehr_id, qr_version_id, state, choices, bundle_enc, sha256, sha1, id_map_enc,
         created_at, updated_at)
       VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,'writing-back',$12,$13,$14,$15,$16,$17,$17)
       ON CONFLICT (tenant_id, qr_ehr_id, payer_id) DO NOTHING RETURNING id`,
      [
        id,
        input.formId,
        input.payerId,
        input.tenantId,
        input.sessionIdHash,
        input.patientHash,
        input.route,
        input.igVersion,
        input.questionnaireUrl,
        input.qrEhrId,
        input.qrVersionId ?? null,
        JSON.stringify(input.choices),
        sealed,
        input.sha256,
        input.sha1,
        this.sealer.seal(JSON.stringify(input.idMap), `submission:${id}:ids`),
        now,
      ],
    );
    const found = await this.forResponse(input.tenantId, input.qrEhrId, input.payerId);
    if (!found) throw new Error('submission vanished after insert');
    return { submission: found, created: inserted.length === 1 };
  }

  async get(id: string): Promise<Submission | undefined> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) return undefined;
    const [row] = await query<Row>(this.dataSource, `${SELECT} WHERE s.id = $1`, [id]);
    return row ? this.toSubmission(row) : undefined;
  }

  /** The submission of a questionnaire response (its EHR id) to a payer, whichever session made it. */
  async forResponse(tenantId: string, qrEhrId: string, payerId: string): Promise<Submission | undefined> {
    const [row] = await query<Row>(
      this.dataSource,
      `${SELECT} WHERE s.tenant_id = $1 AND s.qr_ehr_id = $2 AND s.payer_id = $3`,
      [tenantId, qrEhrId, payerId],
    );
    return row ? this.toSubmission(row) : undefined;
  }

  async forSession(sessionIdHash: string): Promise<Submission[]> {
    const rows = await query<Row>(this.dataSource, `${SELECT} WHERE s.session_id_hash = $1 ORDER BY s.created_at`, [
      sessionIdHash,
    ]);
    return rows.map((r) => this.toSubmission(r));
  }

  async list(filter: { state?: SubmissionState; limit?: number } = {}): Promise<Submission[]> {
    const rows = await query<Row>(
      this.dataSource,
      `${SELECT} ${filter.state ? 'WHERE s.state = $2' : 'WHERE $2::text IS NULL'} ORDER BY s.created_at LIMIT $1`,
      [Math.min(Math.max(filter.limit ?? 500, 1), 10_000), filter.state ?? null],
    );
    return rows.map((r) => this.toSubmission(r));
  }

  /**
   * The EHR holds the verified copy: in one transaction the submission moves to `queued` and its outbox row is
   * written (nothing is ever queued without the copy; a repeat is a no-op). `also` runs in the same transaction
   * (the audit record of the read-back).
   */
  async queue(
    id: string,
    copy: { documentReference: string; provenance: string },
    also?: (tx: Queryable) => Promise<unknown>,
  ): Promise<boolean> {
    return this.dataSource.transaction(async (tx) => {
      const now = this.clock.now();
      const moved = await query<{ id: string }>(
        tx,
        `UPDATE submission SET state = 'queued', document_reference = $2, provenance = $3, last_error = NULL,
           write_lease_until = NULL, updated_at = $4 WHERE id = $1 AND state IN ('writing-back', 'write-back-failed') RETURNING id`,
        [id, copy.documentReference, copy.provenance, now],
      );
      if (moved.length === 0) return false;
      await query(
        tx,
        `INSERT INTO outbox (submission_id, state, attempts, next_attempt_at, created_at, updated_at)
         VALUES ($1, 'ready', 0, $2, $2, $2) ON CONFLICT (submission_id) DO NOTHING`,
        [id, now],
      );
      if (also) await also(tx);
      return true;
    });
  }

  async writeBackFailed(id: string, error: string): Promise<void> {
    await query(
      this.dataSource,
      `UPDATE submission SET state = 'write-back-failed', last_error = $2, write_lease_until = NULL, updated_at = $3
       WHERE id = $1 AND state IN ('writing-back', 'write-back-failed')`,
      [id, error.slice(0, 500), this.clock.now()],
    );
  }

  /**
   * Takes the write-back of a submission for `leaseMs` (one instance writes the copy at a time; a copy left half-way
   * by an instance that died is taken again once its lease has run out). False when someone else holds it or it is
   * no longer waiting for its copy.
   */
  async claimWriteBack(id: string, leaseMs: number): Promise<boolean> {
    const now = this.clock.now();
    const rows = await query<{ id: string }>(
      this.dataSource,
      `UPDATE submission SET state = 'writing-back', write_lease_until = $3, updated_at = $2
       WHERE id = $1 AND state IN ('writing-back', 'write-back-failed')
         AND (write_lease_until IS NULL OR write_lease_until < $2) RETURNING id`,
      [id, now, new Date(now.getTime() + leaseMs)],
    );
    return rows.length === 1;
  }

  /** Submissions whose copy was started and not finished, with no live lease: an instance died while writing it. */
  async abandonedWriteBacks(limit = 20): Promise<Submission[]> {
    const rows = await query<Row>(
      this.dataSource,
      `${SELECT} WHERE s.state = 'writing-back' AND s.write_lease_until < $1 ORDER BY s.created_at LIMIT $2`,
      [this.clock.now(), limit],
    );
    return rows.map((r) => this.toSubmission(r));
  }

  private toSubmission(row: Row): Submission {
    const request = JSON.parse(this.sealer.open(row.bundle_enc, `submission:${row.id}:body`)) as {
      path: string;
      body: string;
    };
    return {
      id: row.id,
      formId: row.form_id,
      payerId: row.payer_id,
      tenantId: row.tenant_id,
      sessionIdHash: row.session_id_hash,
      patientHash: row.patient_hash,
      route: row.route,
      igVersion: row.ig_version,
      questionnaireUrl: row.questionnaire_url,
      qrEhrId: row.qr_ehr_id,
      ...(row.qr_version_id ? { qrVersionId: row.qr_version_id } : {}),
      state: row.state,
      choices: row.choices,
      path: request.path,
      body: request.body,
      sha256: row.sha256,
      sha1: row.sha1,
      idMap: JSON.parse(this.sealer.open(row.id_map_enc, `submission:${row.id}:ids`)) as Record<string, string>,
      ...(row.document_reference ? { documentReference: row.document_reference } : {}),
      ...(row.provenance ? { provenance: row.provenance } : {}),
      ...(row.payer_outcome ? { payerOutcome: row.payer_outcome } : {}),
      ...(row.payer_answer_enc
        ? { payerAnswer: JSON.parse(this.sealer.open(row.payer_answer_enc, `submission:${row.id}:answer`)) as unknown }
        : {}),
      ...(row.last_error ? { lastError: row.last_error } : {}),
      attempts: row.attempts ?? 0,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  /** Seals the payer's answer for this submission (used by the outbox in its own transaction). */
  sealAnswer(id: string, answer: unknown): string {
    return this.sealer.seal(JSON.stringify(answer), `submission:${id}:answer`);
  }
}
