import { AuditLog } from '@dtr/audit';
import { Inject, Injectable } from '@nestjs/common';
import { Clock, DtrError } from '@dtr/kernel';
import { type FhirResource, type PackageIssue, parseResourceReference, relativeReference } from '@dtr/fhir';
import { PackageCache, PackageRetrieval, PayerRegistry } from '@dtr/payer';
import { FhirClientReader, type PrefillIssue } from '@dtr/prefill';
import {
  BackendServicesClient,
  dtrContextOf,
  type OutboundPolicy,
  type SessionRecord,
  SmartSessions,
} from '@dtr/smart';
import { OUTBOUND_POLICY } from '../smart/smart.module.js';
import { FormSessionsService } from './forms/form-sessions.service.js';
import { PrefillPool } from './prefill-pool/prefill-pool.js';
import { PayerClients } from './payer-clients.js';

interface PreparedQuestionnaire {
  /** The form of this questionnaire in this session: `/app/questionnaires/{formId}`, the questionnaire-responses API. */
  formId: string;
  /** `not-started`, or where a response found in the EHR was resumed (`in-progress`), or `stopped` when expired. */
  formStatus: string;
  /** The EHR response this form continues, when one was found. */
  resumedFrom?: string;
  questionnaire: string;
  questionnaireResponse: FhirResource;
  issues: PrefillIssue[];
  /** candidateExpression: answer options offered per item (linkId), from the patient's record. */
  options: Record<string, Array<Record<string, unknown>>>;
  /** contextExpression: the resources shown with an item (linkId). */
  answerContext: Record<string, unknown[]>;
}

export interface PreparedQuestionnaires {
  payer: { id: string; name: string };
  questionnaires: PreparedQuestionnaire[];
  /** Problems in the payer's package (also reported to the payer when they block use). */
  packageIssues: PackageIssue[];
  /** Warnings the payer sent with the package. */
  payerOutcomes: FhirResource[];
  dataRead: { searches: number; reads: number };
}

/** Type and id of a launch-context reference; a malformed one is the EHR's error, refused before any read. */
const splitRef = (ref: string): [string, string] => {
  const parsed = parseResourceReference(ref);
  if (!parsed) throw new DtrError('INVALID_INPUT', 'the launch context names a malformed reference');
  return [parsed.type, parsed.id];
};

/**
 * For a signed-in session: the order(s) and coverage from the EHR, the payer of that coverage, its questionnaire
 * package (cached, validated), and a prefilled QuestionnaireResponse per questionnaire, computed from
 * minimum-necessary EHR data read with the session's `supplement` token.
 */
@Injectable()
export class PrepareQuestionnairesUseCase {
  private readonly retrieval: PackageRetrieval;

  constructor(
    private readonly audit: AuditLog,
    private readonly smart: SmartSessions,
    private readonly payers: PayerRegistry,
    private readonly tokens: BackendServicesClient,
    cache: PackageCache,
    @Inject(OUTBOUND_POLICY) private readonly policy: OutboundPolicy,
    private readonly clock: Clock,
    private readonly pool: PrefillPool,
    private readonly forms: FormSessionsService,
    private readonly payerClients: PayerClients,
  ) {
    this.retrieval = new PackageRetrieval(cache);
  }

  async run(session: SessionRecord): Promise<PreparedQuestionnaires> {
    if (!session.patient) throw new DtrError('CONFLICT', 'the session has no patient in context');
    const ehr = this.smart.fhirClient(session, 'supplement');
    const reader = new FhirClientReader(ehr);
    const context = dtrContextOf(session.context);
    if (context.orders.length === 0)
      throw new DtrError('CONFLICT', 'the launch named no order: DTR needs the order that needs documentation');
    const orders = (await Promise.all(context.orders.map((ref) => reader.read(...splitRef(ref))))).filter(
      (r): r is FhirResource => Boolean(r),
    );
    if (orders.length === 0) throw new DtrError('NOT_FOUND', 'the order in context could not be read from the EHR');
    let coverages = (await Promise.all(context.coverages.map((ref) => reader.read(...splitRef(ref))))).filter(
      (r): r is FhirResource => Boolean(r),
    );
    if (coverages.length === 0)
      coverages = await reader.search('Coverage', { patient: session.patient, status: 'active' });
    if (coverages.length === 0) throw new DtrError('NOT_FOUND', 'no active coverage for this patient in the EHR');

    const { payer, coverage } = await this.payerFor(reader, coverages);
    if (!payer || !coverage)
      throw new DtrError('NOT_FOUND', "the patient's coverage is with a payer this service is not registered with");

    const client = await this.payerClients.forSession(payer, session);
    const retrieved = await this.retrieval.retrieve(client, {
      coverages: [coverage, ...coverages.filter((c) => c !== coverage)],
      orders,
      questionnaires: context.questionnaires,
      ...(context.coverageAssertion ? { context: context.coverageAssertion } : {}),
    });
    // One job for all questionnaires (reads, searches and defines shared), evaluated off the event loop by the pool;
    // the reader, and the EHR token in it, stay on this thread.
    // The encounter of the launch, or one the EHR named in fhirContext.
    const fromContext = session.context.fhirContext.find(
      (c) => c.reference && (c.type ?? parseResourceReference(c.reference)?.type) === 'Encounter',
    )?.reference;
    const contextEncounter = parseResourceReference(fromContext);
    const encounter = session.encounter
      ? `Encounter/${session.encounter}`
      : contextEncounter?.type === 'Encounter'
        ? relativeReference(contextEncounter)
        : undefined;

    const results = await this.pool.run(
      {
        pkg: retrieved.pkg,
        questionnaires: retrieved.questionnaires,
        patientId: session.patient,
        order: `${orders[0]!.resourceType}/${orders[0]!.id}`,
        coverage: `Coverage/${coverage.id}`,
        ...(encounter ? { encounter } : {}),
        ...(session.fhirUser ? { user: session.fhirUser.replace(`${session.fhirBase}/`, '') } : {}),
        igVersion: payer.igVersion,
        // Value sets are searched with code:in where the EHR supports it (asked once per EHR, then remembered).
        codeIn: true,
        known: [...orders, ...coverages],
      },
      reader,
    );
    const opened = await this.forms.open(session, {
      payer,
      payerClient: client,
      pkg: retrieved.pkg,
      questionnaires: retrieved.questionnaires,
      prefills: results,
      orders: orders.map((o) => `${o.resourceType}/${o.id}`),
      coverage: `Coverage/${coverage.id}`,
      ...(encounter ? { encounter } : {}),
    });
    const questionnaires: PreparedQuestionnaire[] = retrieved.questionnaires.map((questionnaire, i) => ({
      formId: opened[i]!.id,
      formStatus: opened[i]!.status,
      ...(opened[i]!.resumedFrom ? { resumedFrom: opened[i]!.resumedFrom } : {}),
      questionnaire: retrieved.pkg.questionnaireKey(questionnaire),
      questionnaireResponse: results[i]!.questionnaireResponse,
      issues: results[i]!.issues,
      options: results[i]!.options,
      answerContext: results[i]!.answerContext,
    }));
    await this.auditAccess(session, reader, results);
    return {
      payer: { id: payer.id, name: payer.name },
      questionnaires,
      packageIssues: retrieved.issues,
      payerOutcomes: retrieved.outcomes,
      dataRead: { searches: reader.searches.length, reads: reader.reads.length },
    };
  }

  /** The first coverage whose payor (by identifier, or through the Organization it references) is registered. */
  private async payerFor(
    reader: FhirClientReader,
    coverages: FhirResource[],
  ): Promise<{ payer?: Awaited<ReturnType<PayerRegistry['forCoverage']>>; coverage?: FhirResource }> {
    let payer: Awaited<ReturnType<PayerRegistry['forCoverage']>>;
    let coverage: FhirResource | undefined;
    for (const candidate of coverages) {
      // The payor named by reference: its identifiers decide the payer (read from the EHR only when needed).
      const payors = ((candidate['payor'] as Array<{ reference?: string }> | undefined) ?? [])
        .map((p) => p.reference)
        .filter((ref): ref is string => typeof ref === 'string' && /^Organization\/[A-Za-z0-9\-.]{1,64}$/.test(ref));
      payer = await this.payers.forCoverage(candidate);
      if (!payer && payors.length > 0) {
        // One the EHR will not show (scopes) leaves the coverage unmatched, as when it names no known payer.
        const organizations = await Promise.all(
          payors.map((ref) => reader.read(...splitRef(ref)).catch(() => undefined)),
        );
        payer = await this.payers.forCoverage(
          candidate,
          organizations.filter((o): o is FhirResource => Boolean(o)),
        );
      }
      if (payer) {
        coverage = candidate;
        break;
      }
    }
    return { payer, coverage };
  }

  /**
   * What was read from the EHR for this prefill, for reasonableness review: per resource type the searches and reads
   * made and the resources returned, with keyed hashes of what was read by id; no ids, no content.
   */
  private async auditAccess(
    session: SessionRecord,
    reader: FhirClientReader,
    results: Array<{ stats: { resourcesRead: number } }>,
  ): Promise<void> {
    const byType = new Map<string, { searches: number; reads: number }>();
    const count = (type: string) => byType.get(type) ?? byType.set(type, { searches: 0, reads: 0 }).get(type)!;
    for (const s of reader.searches) count(s.resourceType).searches++;
    for (const r of reader.reads) count(r.split('/')[0]!).reads++;
    await this.audit.record({
      kind: 'ehr-data-access',
      action: 'R',
      outcome: '0',
      tenantId: session.tenantId,
      sessionIdHash: session.idHash,
      patientHash: this.audit.hash(`Patient/${session.patient}`),
      agents: [
        ...(session.fhirUser ? [{ type: 'user' as const, who: session.fhirUser, requestor: true }] : []),
        { type: 'client', who: 'supplement', requestor: false },
      ],
      entities: [...byType].map(([type, n]) => ({ what: `${type}:query`, type, role: '24', detail: n })),
      detail: {
        searches: reader.searches.length,
        reads: reader.reads.length,
        resources: Math.max(0, ...results.map((r) => r.stats.resourcesRead)),
        readHashes: reader.reads
          .slice(0, 50)
          .map((r) => this.audit.hash(r))
          .join(','),
      },
    });
  }
}
