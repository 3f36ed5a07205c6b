/**
 * Our audit vocabulary, and its FHIR AuditEvent shape (IHE Basic Audit Log Patterns). Nothing in an event is PHI:
 * patients and resources are named by keyed hashes, never by id or content; counts and resource types are kept.
 * @see https://profiles.ihe.net/ITI/BALP/
 */
export type AuditKind =
  | 'launch'
  | 'ehr-data-access'
  | 'qr-save'
  | 'disclose-authorization'
  | 'sensitive-choice'
  | 'ehr-write-back'
  | 'ehr-read-back'
  | 'delivery-attempt'
  | 'payer-answer'
  | 'submission-retry'
  | 'retention-purge'

  /** The launch's EHR token sent to a payer registered with `tokenSource: launch` (test harnesses), each use. */
  | 'payer-launch-token'
  /** One of our UDAP client registrations at an EHR or a payer: registered, modified or cancelled (or refused). */
  | 'udap-registration';

/** FHIR AuditEvent.action: create, read, update, delete, execute. */
type AuditAction = 'C' | 'R' | 'U' | 'D' | 'E';
/** FHIR AuditEvent.outcome: success, minor failure, serious failure, major failure. */
type AuditOutcome = '0' | '4' | '8' | '12';

interface AuditAgent {
  /** `client`: one of our OAuth client ids; `user`: the signed-in user's fhirUser reference; `payer`: a payer id. */
  type: 'client' | 'user' | 'payer' | 'operator' | 'system';
  who: string;
  requestor: boolean;
}

interface AuditEntity {
  /** What the event touched: a keyed hash of a resource reference, or one of our own ids (submission, form). */
  what: string;
  /** FHIR resource type when the entity is a FHIR resource (or a count of them). */
  type?: string;
  /** BALP entity role (3 report, 4 domain resource, 20 job, 24 query...). */
  role?: string;
  /** Non-PHI facts: counts, hashes of bytes, states. */
  detail?: Record<string, string | number | boolean>;
}

export interface AuditRecord {
  kind: AuditKind;
  action: AuditAction;
  outcome: AuditOutcome;
  tenantId?: string;
  sessionIdHash?: string;
  /** The patient, already hashed with `AuditLog.hash` (never a plain id). */
  patientHash?: string;
  submissionId?: string;
  agents: AuditAgent[];
  entities: AuditEntity[];
  /** Non-PHI description of the outcome (an error code, a state), never upstream text. */
  detail?: Record<string, string | number | boolean>;
}

export interface StoredAuditEvent extends AuditRecord {
  id: string;
  seq: number;
  recorded: Date;
}

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const AUDIT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const OUR_KINDS = 'urn:dtr-backend:audit-kind';

/** What each of our kinds is in BALP terms: the event type and its REST/DICOM subtype. */
const TYPE_OF: Record<AuditKind, { system: string; code: string; display: string }> = {
  launch: { system: DCM, code: '110114', display: 'User Authentication' },
  'ehr-data-access': { system: AUDIT_TYPE, code: 'rest', display: 'RESTful Operation' },
  'qr-save': { system: AUDIT_TYPE, code: 'rest', display: 'RESTful Operation' },
  'disclose-authorization': { system: DCM, code: '110114', display: 'User Authentication' },
  'sensitive-choice': { system: DCM, code: '110106', display: 'Export' },
  'ehr-write-back': { system: AUDIT_TYPE, code: 'rest', display: 'RESTful Operation' },
  'ehr-read-back': { system: AUDIT_TYPE, code: 'rest', display: 'RESTful Operation' },
  'delivery-attempt': { system: DCM, code: '110106', display: 'Export' },
  'payer-answer': { system: DCM, code: '110107', display: 'Import' },
  'submission-retry': { system: DCM, code: '110106', display: 'Export' },
  'retention-purge': { system: DCM, code: '110100', display: 'Application Activity' },
  'payer-launch-token': { system: AUDIT_TYPE, code: 'rest', display: 'RESTful Operation' },
  'udap-registration': { system: DCM, code: '110100', display: 'Application Activity' },
};

export function auditTypeOf(kind: AuditKind): { system: string; code: string; display: string } {
  return TYPE_OF[kind];
}

/** The event as a FHIR R4 AuditEvent. */
export function toFhirAuditEvent(event: StoredAuditEvent, source: string): Record<string, unknown> {
  const type = TYPE_OF[event.kind];
  return {
    resourceType: 'AuditEvent',
    id: event.id,
    meta: { profile: ['https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.SubjectPrivacy'] },
    type,
    subtype: [{ system: OUR_KINDS, code: event.kind }],
    action: event.action,
    recorded: event.recorded.toISOString(),
    outcome: event.outcome,
    ...(event.detail ? { outcomeDesc: describe(event.detail) } : {}),
    agent: event.agents.map((a) => ({
      type: {
        coding: [
          a.type === 'user'
            ? { system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }
            : { system: DCM, code: a.requestor ? '110153' : '110152', display: a.requestor ? 'Source' : 'Destination' },
        ],
      },
      who:
        a.type === 'user'
          ? { reference: a.who }
          : { identifier: { system: `urn:dtr-backend:${a.type}`, value: a.who } },
      requestor: a.requestor,
    })),
    source: {
      observer: { display: source },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4' }],
    },
    entity: [
      ...(event.patientHash
        ? [
            {
              what: { identifier: { system: 'urn:dtr-backend:patient-hash', value: event.patientHash } },
              type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1' },
              role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1' },
            },
          ]
        : []),
      ...(event.submissionId
        ? [{ what: { identifier: { system: 'urn:dtr-backend:submission', value: event.submissionId } } }]
        : []),
      ...(event.sessionIdHash
        ? [{ what: { identifier: { system: 'urn:dtr-backend:session-hash', value: event.sessionIdHash } } }]
        : []),
      ...event.entities.map((e) => ({
        what: { identifier: { system: 'urn:dtr-backend:entity', value: e.what } },
        ...(e.type ? { type: { system: 'http://hl7.org/fhir/resource-types', code: e.type } } : {}),
        ...(e.role ? { role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: e.role } } : {}),
        ...(e.detail
          ? { detail: Object.entries(e.detail).map(([type, value]) => ({ type, valueString: String(value) })) }
          : {}),
      })),
    ],
  };
}

function describe(detail: Record<string, string | number | boolean>): string {
  return Object.entries(detail)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join('; ');
}
