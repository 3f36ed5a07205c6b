import { createHmac, randomUUID } from 'node:crypto';
import { type Clock, DtrError } from '@dtr/kernel';
import { query, type Queryable } from '@dtr/persistence';
import { type AuditRecord, auditTypeOf, type StoredAuditEvent } from './audit-event.js';

export interface AuditFilter {
  /** A plain patient id: hashed here the way events hash it. */
  patient?: string;
  sessionIdHash?: string;
  submissionId?: string;
  from?: Date;
  to?: Date;
  kind?: string;
  limit?: number;
  /** Events after this sequence number (paging). */
  afterSeq?: number;
}

interface Row {
  seq: string;
  id: string;
  recorded_at: Date;
  subtype_code: StoredAuditEvent['kind'];
  action: StoredAuditEvent['action'];
  outcome: StoredAuditEvent['outcome'];
  tenant_id: string | null;
  session_id: string | null;
  patient_hash: string | null;
  submission_id: string | null;
  agent: StoredAuditEvent['agents'];
  entity: StoredAuditEvent['entities'];
  detail: NonNullable<StoredAuditEvent['detail']>;
}

/**
 * The append-only audit trail (`audit_event`; the database refuses UPDATE, DELETE and TRUNCATE outside the retention
 * purge). Events carry no PHI: patients and resources are named by a keyed hash (`hash`), so the trail can be
 * searched by patient without holding the patient's id. `record` takes the queryable to write with, so an event can
 * be part of the transaction whose change it records.
 */
export class AuditLog {
  constructor(
    private readonly db: Queryable,
    private readonly hashKey: Buffer,
    private readonly clock: Clock,
  ) {
    if (hashKey.length < 16) throw new DtrError('CONFIGURATION', 'the audit hash key must have at least 16 bytes');
  }

  /** A keyed hash of an identifier (a patient id, a resource reference): stable, not reversible without the key. */
  hash(value: string): string {
    return createHmac('sha256', this.hashKey).update(value).digest('base64url').slice(0, 32);
  }

  async record(event: AuditRecord, db: Queryable = this.db): Promise<string> {
    const id = randomUUID();
    await query(
      db,
      `INSERT INTO audit_event (id, recorded_at, type_code, subtype_code, action, outcome, tenant_id, session_id,
         patient_hash, submission_id, agent, entity, detail)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      [
        id,
        this.clock.now(),
        auditTypeOf(event.kind).code,
        event.kind,
        event.action,
        event.outcome,
        event.tenantId ?? null,
        event.sessionIdHash ?? null,
        event.patientHash ?? null,
        event.submissionId ?? null,
        JSON.stringify(event.agents),
        JSON.stringify(event.entities),
        JSON.stringify(event.detail ?? {}),
      ],
    );
    return id;
  }

  async search(filter: AuditFilter = {}): Promise<StoredAuditEvent[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (filter.patient) add('patient_hash = ?', this.hash(filter.patient));
    if (filter.sessionIdHash) add('session_id = ?', filter.sessionIdHash);
    if (filter.submissionId) add('submission_id = ?', filter.submissionId);
    if (filter.kind) add('subtype_code = ?', filter.kind);
    if (filter.from) add('recorded_at >= ?', filter.from);
    if (filter.to) add('recorded_at < ?', filter.to);
    if (filter.afterSeq !== undefined) add('seq > ?', filter.afterSeq);
    params.push(Math.min(Math.max(filter.limit ?? 1000, 1), 10_000));
    const rows = await query<Row>(
      this.db,
      `SELECT * FROM audit_event ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY seq LIMIT $${params.length}`,
      params,
    );
    return rows.map((r) => ({
      id: r.id,
      seq: Number(r.seq),
      recorded: r.recorded_at,
      kind: r.subtype_code,
      action: r.action,
      outcome: r.outcome,
      ...(r.tenant_id ? { tenantId: r.tenant_id } : {}),
      ...(r.session_id ? { sessionIdHash: r.session_id } : {}),
      ...(r.patient_hash ? { patientHash: r.patient_hash } : {}),
      ...(r.submission_id ? { submissionId: r.submission_id } : {}),
      agents: r.agent,
      entities: r.entity,
      ...(Object.keys(r.detail).length ? { detail: r.detail } : {}),
    }));
  }
}
