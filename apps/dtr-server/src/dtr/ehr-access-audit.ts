import type { AuditLog } from '@dtr/audit';
import type { FhirClientReader } from '@dtr/prefill';
import type { SessionRecord } from '@dtr/smart';

/**
 * What a prefill (the first, or an adaptive step's) read from the EHR, audited for reasonableness review: per
 * resource type the searches and reads made, with keyed hashes of what was read by id; no ids, no content. `detail`
 * adds what the caller knows (the step, the resources returned).
 */
export async function auditEhrAccess(
  audit: AuditLog,
  session: SessionRecord,
  patient: string,
  reader: FhirClientReader,
  detail: Record<string, string | number> = {},
): Promise<void> {
  const byType = new Map<string, { searches: number; reads: number }>();
  const count = (type: string) => byType.get(type) ?? byType.set(type, { searches: 0, reads: 0 }).get(type)!;
  for (const s of reader.searches) count(s.resourceType).searches++;
  for (const r of reader.reads) count(r.split('/')[0]!).reads++;
  await audit.record({
    kind: 'ehr-data-access',
    action: 'R',
    outcome: '0',
    tenantId: session.tenantId,
    sessionIdHash: session.idHash,
    patientHash: audit.hash(`Patient/${patient}`),
    agents: [
      ...(session.fhirUser ? [{ type: 'user' as const, who: session.fhirUser, requestor: true }] : []),
      { type: 'client', who: 'supplement', requestor: false },
    ],
    entities: [...byType].map(([type, n]) => ({ what: `${type}:query`, type, role: '24', detail: n })),
    detail: {
      ...detail,
      searches: reader.searches.length,
      reads: reader.reads.length,
      readHashes: reader.reads
        .slice(0, 50)
        .map((r) => audit.hash(r))
        .join(','),
    },
  });
}
