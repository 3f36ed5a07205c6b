import type { AuditLog } from '@dtr/audit';
import type { Submission } from '@dtr/disclosure';
import type { Queryable } from '@dtr/persistence';
import type { SessionRecord, TenantView } from '@dtr/smart';
import type { Flags } from './disclosure-review.js';
import type { CopyResult } from './ehr-copy.js';

/** The audit records of one submission's path into the EHR; no PHI: hashes, keys, counts and states only. */
export class DisclosureAudit {
  constructor(
    private readonly audit: AuditLog,
    private readonly session: SessionRecord,
  ) {}

  private base(submission: Submission) {
    return {
      tenantId: this.session.tenantId,
      sessionIdHash: this.session.idHash,
      patientHash: submission.patientHash,
      submissionId: submission.id,
    };
  }

  private user() {
    return this.session.fhirUser ? [{ type: 'user' as const, who: this.session.fhirUser, requestor: true }] : [];
  }

  /** The disclose authorization used (single-client tenants marked) and each sensitive choice. */
  async chosen(
    submission: Submission,
    flags: Flags,
    discloseClientId: string,
    tenant: TenantView | undefined,
  ): Promise<void> {
    await this.audit.record({
      ...this.base(submission),
      kind: 'disclose-authorization',
      action: 'E',
      outcome: '0',
      agents: [...this.user(), { type: 'client', who: discloseClientId, requestor: false }],
      entities: [],
      detail: { mode: tenant?.discloseMode ?? 'user-delegated', singleClient: Boolean(tenant?.singleClient) },
    });
    for (const key of flags.needsChoice) {
      const choice = submission.choices[key] ?? 'include';
      const isItem = key.startsWith('item:');
      await this.audit.record({
        ...this.base(submission),
        kind: 'sensitive-choice',
        action: 'E',
        outcome: '0',
        agents: this.user(),
        entities: [
          isItem
            ? { what: key, role: '4', detail: { choice } }
            : {
                what: this.audit.hash(key.slice('resource:'.length)),
                type: key.slice('resource:'.length).split('/')[0]!,
                role: '4',
                detail: { choice },
              },
        ],
        detail: { choice },
      });
    }
  }

  async writeBackFailed(
    submission: Submission,
    result: Extract<CopyResult, { kind: 'failed' }>,
    client: string,
  ): Promise<void> {
    await this.audit.record({
      ...this.base(submission),
      kind: result.step === 'read-back' ? 'ehr-read-back' : 'ehr-write-back',
      action: result.step === 'read-back' ? 'R' : 'C',
      outcome: '8',
      agents: [{ type: 'client', who: client, requestor: true }],
      entities: [{ what: submission.id, type: 'DocumentReference', role: '3', detail: { sha256: submission.sha256 } }],
      detail: { step: result.step, status: result.status },
    });
  }

  /** Written and read back: recorded in the transaction that queues the submission. */
  async verified(
    submission: Submission,
    result: Extract<CopyResult, { kind: 'verified' }>,
    client: string,
    tx: Queryable,
  ): Promise<void> {
    const copy = { what: this.audit.hash(result.documentReference), type: 'DocumentReference', role: '3' };
    await this.audit.record(
      {
        ...this.base(submission),
        kind: 'ehr-write-back',
        action: 'C',
        outcome: '0',
        agents: [...this.user(), { type: 'client', who: client, requestor: true }],
        entities: [
          {
            ...copy,
            detail: { sha256: submission.sha256, bytes: Buffer.byteLength(submission.body), newCopy: result.created },
          },
        ],
      },
      tx,
    );
    await this.audit.record(
      {
        ...this.base(submission),
        kind: 'ehr-read-back',
        action: 'R',
        outcome: '0',
        agents: [{ type: 'system', who: 'dtr-backend', requestor: true }],
        entities: [{ ...copy, detail: { sha256: submission.sha256, matches: true } }],
      },
      tx,
    );
  }
}
