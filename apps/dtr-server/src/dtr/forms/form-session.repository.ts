import { randomUUID } from 'node:crypto';
import { Clock } from '@dtr/kernel';
import type { DtrVersion, FhirResource } from '@dtr/fhir';
import { query } from '@dtr/persistence';
import { SecretBox } from '@dtr/smart';
import type { DataSource } from 'typeorm';

export type FormStatus = 'not-started' | 'in-progress' | 'completed' | 'stopped';
export type IgVersion = DtrVersion;

/** What a form needs besides the answers, fixed when the session's package was prepared (sealed: it holds PHI). */
export interface FormDefinitionRecord {
  questionnaire: FhirResource;
  valueSets: FhirResource[];
  issues: Array<{ severity: string; code: string; message: string; linkId?: string }>;
  options: Record<string, Array<Record<string, unknown>>>;
  answerContext: Record<string, unknown[]>;
  /** Per item: the resources its prefill expression read (references and security labels), for disclosure. */
  sources?: Record<string, Array<{ reference: string; labels?: Array<{ system?: string; code?: string }> }>>;
  orders: string[];
  coverage: string[];
  encounter?: string;
  author: { practitioner?: string; practitionerRole?: string; display?: string };
  /** FHIRPath launch contexts for enableWhenExpression/calculatedExpression (%patient …). */
  context?: Record<string, unknown>;
  /**
   * An adaptive questionnaire (`questionnaireAdaptive`): `questionnaire` above is then the Questionnaire so far, as the
   * payer's last `$next-question` answer contained it; `url` the extension's `$next-question` base when it names one;
   * `extensions` the root extensions of that answer we keep (CRD coverage-information).
   */
  adaptive?: { url?: string; extensions: Array<Record<string, unknown>> };
  /** Set when the form continues a response found in the EHR. */
  resumed?: { from: string; updated: string[]; added: string[] };
}

export interface FormSession {
  id: string;
  sessionIdHash: string;
  tenantId: string;
  patient: string;
  payer: { id: string; name: string };
  questionnaire: { url: string; version?: string; title?: string };
  igVersion: IgVersion;
  status: FormStatus;
  stoppedReason?: string;
  definition: FormDefinitionRecord;
  prefill: FhirResource;
  draft?: FhirResource;
  /** The EHR's version when our update was refused with 412. */
  conflict?: FhirResource;
  ehr: { id?: string; versionId?: string; savedAt?: Date; error?: string };
  createdAt: Date;
  updatedAt: Date;
}

/** A form to store; `id` keeps the id of a form the session already had for the same questionnaire. */
export type NewFormSession = Omit<FormSession, 'id' | 'createdAt' | 'updatedAt'> & { id?: string };

interface FormRow {
  id: string;
  session_id_hash: string;
  tenant_id: string;
  patient: string;
  payer_id: string;
  payer_name: string;
  questionnaire_url: string;
  questionnaire_version: string | null;
  questionnaire_title: string | null;
  ig_version: IgVersion;
  status: FormStatus;
  stopped_reason: string | null;
  definition_enc: string;
  prefill_enc: string;
  draft_enc: string | null;
  conflict_enc: string | null;
  ehr_id: string | null;
  ehr_version_id: string | null;
  ehr_saved_at: Date | null;
  ehr_error: string | null;
  created_at: Date;
  updated_at: Date;
}

/** Sealed columns: the AAD binds each ciphertext to its row and column so it cannot be moved to another. */
const aad = (id: string, column: string) => `form_session:${id}:${column}`;

/**
 * The `form_session` table: a session's questionnaires, their prefill and the clinician's current draft. Raw SQL
 * here only; rules live in the forms use-case.
 */
export class FormSessionRepository {
  constructor(
    private readonly dataSource: DataSource,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
  ) {}

  private query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return query<T>(this.dataSource, sql, params);
  }

  private seal(id: string, column: string, value: unknown): string {
    return this.secrets.seal(JSON.stringify(value), aad(id, column));
  }

  private open<T>(id: string, column: string, sealed: string): T {
    return JSON.parse(this.secrets.open(sealed, aad(id, column))) as T;
  }

  /** Replaces the session's forms with a freshly prepared set (what carries over is decided by the caller). */
  async replaceForSession(sessionIdHash: string, forms: NewFormSession[], payerId?: string): Promise<FormSession[]> {
    const now = this.clock.now();
    return this.dataSource.transaction(async (manager) => {
      // With a payer: only that payer's forms are replaced (a session may have forms of several payers).
      if (payerId === undefined)
        await manager.query(`DELETE FROM form_session WHERE session_id_hash = $1`, [sessionIdHash]);
      else
        await manager.query(`DELETE FROM form_session WHERE session_id_hash = $1 AND payer_id = $2`, [
          sessionIdHash,
          payerId,
        ]);
      const created: FormSession[] = [];
      for (const form of forms) {
        const id = form.id ?? randomUUID();
        await manager.query(
          `INSERT INTO form_session (id, session_id_hash, tenant_id, patient, payer_id, payer_name, questionnaire_url,
             questionnaire_version, questionnaire_title, ig_version, status, stopped_reason, definition_enc, prefill_enc,
             draft_enc, conflict_enc, ehr_id, ehr_version_id, ehr_saved_at, ehr_error, created_at, updated_at)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$21)`,
          [
            id,
            form.sessionIdHash,
            form.tenantId,
            form.patient,
            form.payer.id,
            form.payer.name,
            form.questionnaire.url,
            form.questionnaire.version ?? null,
            form.questionnaire.title ?? null,
            form.igVersion,
            form.status,
            form.stoppedReason ?? null,
            this.seal(id, 'definition', form.definition),
            this.seal(id, 'prefill', form.prefill),
            form.draft ? this.seal(id, 'draft', form.draft) : null,
            form.conflict ? this.seal(id, 'conflict', form.conflict) : null,
            form.ehr.id ?? null,
            form.ehr.versionId ?? null,
            form.ehr.savedAt ?? null,
            form.ehr.error ?? null,
            now,
          ],
        );
        created.push({ ...form, id, createdAt: now, updatedAt: now });
      }
      return created;
    });
  }

  /** The session's forms without their sealed content (the list view). */
  async summariesForSession(
    sessionIdHash: string,
  ): Promise<Array<Omit<FormSession, 'definition' | 'prefill' | 'draft' | 'conflict'>>> {
    const rows = await this.query<FormRow>(
      `SELECT id, session_id_hash, tenant_id, patient, payer_id, payer_name, questionnaire_url, questionnaire_version,
         questionnaire_title, ig_version, status, stopped_reason, ehr_id, ehr_version_id, ehr_saved_at, ehr_error,
         created_at, updated_at
       FROM form_session WHERE session_id_hash = $1 ORDER BY created_at, questionnaire_url`,
      [sessionIdHash],
    );
    return rows.map((row) => this.fromRow(row, false));
  }

  /** Removes the session's forms of payers other than these (a new prepare no longer involves them). */
  async removeOtherPayers(sessionIdHash: string, payerIds: string[]): Promise<void> {
    await this.query(`DELETE FROM form_session WHERE session_id_hash = $1 AND NOT (payer_id = ANY($2))`, [
      sessionIdHash,
      payerIds,
    ]);
  }

  async listForSession(sessionIdHash: string): Promise<FormSession[]> {
    const rows = await this.query<FormRow>(
      `SELECT * FROM form_session WHERE session_id_hash = $1 ORDER BY created_at, questionnaire_url`,
      [sessionIdHash],
    );
    return rows.map((row) => this.fromRow(row));
  }

  /** The form of this session with this id; another session's form is not found (its id reveals nothing). */
  async get(sessionIdHash: string, id: string): Promise<FormSession | undefined> {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) return undefined;
    const [row] = await this.query<FormRow>(`SELECT * FROM form_session WHERE id = $1 AND session_id_hash = $2`, [
      id,
      sessionIdHash,
    ]);
    return row ? this.fromRow(row) : undefined;
  }

  /** Saves the draft and what the EHR answered; `conflict: null` clears a conflict that was resolved. */
  async saveDraft(
    id: string,
    change: {
      status: FormStatus;
      draft: FhirResource;
      ehr: FormSession['ehr'];
      conflict?: FhirResource | null;
      stoppedReason?: string | null;
    },
  ): Promise<Date> {
    const now = this.clock.now();
    await this.query(
      `UPDATE form_session SET status = $2, draft_enc = $3, ehr_id = $4, ehr_version_id = $5, ehr_saved_at = $6,
         ehr_error = $7, conflict_enc = CASE WHEN $8::boolean THEN $9 ELSE conflict_enc END,
         stopped_reason = CASE WHEN $10::boolean THEN $11 ELSE stopped_reason END, updated_at = $12
       WHERE id = $1`,
      [
        id,
        change.status,
        this.seal(id, 'draft', change.draft),
        change.ehr.id ?? null,
        change.ehr.versionId ?? null,
        change.ehr.savedAt ?? null,
        change.ehr.error ?? null,
        change.conflict !== undefined,
        change.conflict ? this.seal(id, 'conflict', change.conflict) : null,
        change.stoppedReason !== undefined,
        change.stoppedReason ?? null,
        now,
      ],
    );
    return now;
  }

  /** An adaptive form's next step: the Questionnaire so far (in `definition`) and the prefill of its items. */
  async saveDefinition(id: string, definition: FormDefinitionRecord, prefill: FhirResource): Promise<void> {
    await this.query(`UPDATE form_session SET definition_enc = $2, prefill_enc = $3, updated_at = $4 WHERE id = $1`, [
      id,
      this.seal(id, 'definition', definition),
      this.seal(id, 'prefill', prefill),
      this.clock.now(),
    ]);
  }

  /** Purge: forms not touched since `before` (their sessions are gone or idle). Returns how many were removed. */
  async purgeOlderThan(before: Date): Promise<number> {
    const rows = await this.query<{ id: string }>(`DELETE FROM form_session WHERE updated_at < $1 RETURNING id`, [
      before,
    ]);
    return rows.length;
  }

  private fromRow(row: FormRow, sealed?: true): FormSession;
  private fromRow(row: FormRow, sealed: false): Omit<FormSession, 'definition' | 'prefill' | 'draft' | 'conflict'>;
  private fromRow(row: FormRow, sealed = true): Omit<FormSession, 'definition' | 'prefill'> & Partial<FormSession> {
    const base = {
      id: row.id,
      sessionIdHash: row.session_id_hash,
      tenantId: row.tenant_id,
      patient: row.patient,
      payer: { id: row.payer_id, name: row.payer_name },
      questionnaire: {
        url: row.questionnaire_url,
        ...(row.questionnaire_version ? { version: row.questionnaire_version } : {}),
        ...(row.questionnaire_title ? { title: row.questionnaire_title } : {}),
      },
      igVersion: row.ig_version,
      status: row.status,
      ...(row.stopped_reason ? { stoppedReason: row.stopped_reason } : {}),
      ehr: {
        ...(row.ehr_id ? { id: row.ehr_id } : {}),
        ...(row.ehr_version_id ? { versionId: row.ehr_version_id } : {}),
        ...(row.ehr_saved_at ? { savedAt: row.ehr_saved_at } : {}),
        ...(row.ehr_error ? { error: row.ehr_error } : {}),
      },
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
    if (!sealed) return base;
    return {
      ...base,
      definition: this.open<FormDefinitionRecord>(row.id, 'definition', row.definition_enc),
      prefill: this.open<FhirResource>(row.id, 'prefill', row.prefill_enc),
      ...(row.draft_enc ? { draft: this.open<FhirResource>(row.id, 'draft', row.draft_enc) } : {}),
      ...(row.conflict_enc ? { conflict: this.open<FhirResource>(row.id, 'conflict', row.conflict_enc) } : {}),
    };
  }
}
