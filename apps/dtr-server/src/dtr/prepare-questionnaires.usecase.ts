import { AuditLog } from '@dtr/audit';
import { Inject, Injectable, Optional } from '@nestjs/common';
import { Clock, DtrError } from '@dtr/kernel';
import {
  type CompileCqlOptions,
  type FhirResource,
  type PackageIssue,
  parseResourceReference,
  relativeReference,
} from '@dtr/fhir';
import { PackageCache, PackageRetrieval, PayerRegistry } from '@dtr/payer';
import { FhirClientReader, type PrefillIssue } from '@dtr/prefill';
import {
  BackendServicesClient,
  type DtrContext,
  dtrContextOf,
  type OutboundPolicy,
  type SessionRecord,
  SmartSessions,
} from '@dtr/smart';
import { problemFields } from '../http/operation-outcome.js';
import { JsonLogger } from '../logging/json-logger.js';
import { OUTBOUND_POLICY } from '../smart/smart.module.js';
import { FormSessionsService } from './forms/form-sessions.service.js';
import { belongsTo, coverageInformationOf, ordersOfTask, relative, splitRef } from './order-context.js';
import { auditEhrAccess } from './ehr-access-audit.js';
import { CQL_COMPILE } from './prefill-pool/cql-compile-pool.js';
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

/** What one payer answered for its own coverages. */
export interface PayerQuestionnaires {
  payer: { id: string; name: string };
  /** The coverages sent to this payer (only those that map to it). */
  coverages: string[];
  /** The coverage-assertion id sent as `context`, when there was one. */
  coverageAssertion?: string;
  questionnaires: PreparedQuestionnaire[];
  /** Problems in the payer's package (also reported to the payer when they block use). */
  packageIssues: PackageIssue[];
  /** Warnings the payer sent with the package. */
  payerOutcomes: FhirResource[];
  /** Why this payer's questionnaires could not be prepared, when another payer's could. */
  error?: string;
}

export interface PreparedQuestionnaires {
  /** The order(s) the questionnaires are for. */
  orders: string[];
  /** One entry per payer of the patient's coverages (each with its own package request). */
  payers: PayerQuestionnaires[];
  /** Coverages of the patient whose payer is not registered here: sent to no one. */
  unmatchedCoverages: string[];
  dataRead: { searches: number; reads: number };
}

type RegisteredPayer = NonNullable<Awaited<ReturnType<PayerRegistry['forCoverage']>>>;

interface PayerGroup {
  payer: RegisteredPayer;
  coverages: FhirResource[];
}

/** What the session works on: its orders and coverages, read from the EHR, and the coverage-assertion ids. */
interface WorkingContext {
  orders: FhirResource[];
  coverages: FhirResource[];
  /** Coverage-assertion id per coverage (`Coverage/<id>`), from the orders' coverage-information. */
  assertions: Map<string, string>;
  /** The launch's own coverage-assertion id (it takes precedence). */
  launchAssertion?: string;
  questionnaires: string[];
  encounter?: string;
}

type Evaluated = Array<{ stats: { resourcesRead: number } }>;

const refOf = (r: FhirResource) => `${r.resourceType}/${r.id}`;

/**
 * For a signed-in session: the order(s) (named by the launch, through a Task, or chosen in the order picker) and the
 * coverages from the EHR (an order's coverage-information names them), the registered payer of each coverage, and
 * per payer its questionnaire package (cached, validated; asked with only that payer's coverages) and a prefilled
 * QuestionnaireResponse per questionnaire, computed from minimum-necessary EHR data read with the `supplement` token.
 */
@Injectable()
export class PrepareQuestionnairesUseCase {
  private readonly retrieval: PackageRetrieval;
  /** Sessions whose questionnaires are being prepared (in this process): one prepare per session at a time. */
  private readonly preparing = new Set<string>();

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
    /** How CQL-only libraries are compiled: in a worker with a size cap (see DtrModule); `{}` on this thread. */
    @Inject(CQL_COMPILE) compile: CompileCqlOptions,
    /** Where a payer that failed beside others that did not is told (one failing alone is the request's error). */
    @Optional() private readonly logger?: JsonLogger,
  ) {
    this.retrieval = new PackageRetrieval(cache, compile);
  }

  /**
   * Prepares the session's questionnaires. A second prepare of the same session while one runs is refused (409): it
   * would read the same data and run the same payer logic again, and let one session hold several prefill workers.
   */
  async run(session: SessionRecord): Promise<PreparedQuestionnaires> {
    if (this.preparing.has(session.idHash))
      throw new DtrError(
        'CONFLICT',
        'the questionnaires of this session are already being prepared; wait for that to finish, then try again',
      );
    this.preparing.add(session.idHash);
    try {
      return await this.prepare(session);
    } finally {
      this.preparing.delete(session.idHash);
    }
  }

  private async prepare(session: SessionRecord): Promise<PreparedQuestionnaires> {
    if (!session.patient) throw new DtrError('CONFLICT', 'the session has no patient in context');
    const reader = new FhirClientReader(this.smart.fhirClient(session, 'supplement'));
    const working = await this.workingContext(session, session.patient, reader);
    const { groups, unmatched } = await this.groupByPayer(reader, working.coverages);
    const payers: PayerQuestionnaires[] = [];
    const results: Evaluated = [];
    const failures: Array<{ payerId: string; error: unknown }> = [];
    for (const group of groups) {
      try {
        const prepared = await this.forPayer(session, reader, working, group);
        payers.push(prepared.payer);
        results.push(...prepared.results);
      } catch (error) {
        // With several payers, one that fails does not hide the others' questionnaires; it says why instead.
        failures.push({ payerId: group.payer.id, error });
        payers.push({
          payer: { id: group.payer.id, name: group.payer.name },
          coverages: group.coverages.map(refOf),
          questionnaires: [],
          packageIssues: [],
          payerOutcomes: [],
          error:
            (error instanceof DtrError ? error.publicMessage : undefined) ?? 'the questionnaires could not be prepared',
        });
      }
    }
    if (payers.every((p) => p.error !== undefined)) {
      // The first failure is the request's error (logged with it); every other one is logged here.
      for (const { payerId, error } of failures.slice(1)) this.logPayerFailure(payerId, error);
      throw failures[0]!.error;
    }
    for (const { payerId, error } of failures) this.logPayerFailure(payerId, error);
    // Forms of a payer that failed this time are kept (a draft is never lost); those of payers not involved go.
    await this.forms.retainPayers(
      session,
      payers.map((p) => p.payer.id),
    );
    await auditEhrAccess(this.audit, session, session.patient, reader, {
      resources: Math.max(0, ...results.map((r) => r.stats.resourcesRead)),
    });
    return {
      orders: working.orders.map(refOf),
      payers,
      unmatchedCoverages: unmatched,
      dataRead: { searches: reader.searches.length, reads: reader.reads.length },
    };
  }

  /** The whole message of a payer's failure (what to do, for the operator), with the request id the user is shown. */
  private logPayerFailure(payerId: string, error: unknown): void {
    const level = DtrError.is(error) && error.httpStatus < 500 ? 'warn' : 'error';
    this.logger?.entry(level, error instanceof DtrError ? error.message : 'payer questionnaires not prepared', {
      payerId,
      ...problemFields(error),
    });
  }

  /** The coverages grouped by registered payer (in the order they came); those of no registered payer apart. */
  private async groupByPayer(
    reader: FhirClientReader,
    coverages: FhirResource[],
  ): Promise<{ groups: PayerGroup[]; unmatched: string[] }> {
    const groups: PayerGroup[] = [];
    const unmatched: string[] = [];
    for (const coverage of coverages) {
      const payer = await this.payerFor(reader, coverage);
      const group = payer && groups.find((g) => g.payer.id === payer.id);
      if (!payer) unmatched.push(refOf(coverage));
      else if (group) group.coverages.push(coverage);
      else groups.push({ payer, coverages: [coverage] });
    }
    if (groups.length === 0)
      throw new DtrError('NOT_FOUND', "the patient's coverage is with a payer this service is not registered with");
    return { groups, unmatched };
  }

  /**
   * The orders (the launch's, a Task's focus/basedOn, or the clinician's choice), each checked to be this patient's,
   * and the coverages: the launch's and those the orders' coverage-information names, else the active ones.
   */
  private async workingContext(
    session: SessionRecord,
    patient: string,
    reader: FhirClientReader,
  ): Promise<WorkingContext> {
    const context = dtrContextOf(session.context);
    const orders = await this.ordersInContext(context, patient, reader);
    const assertions = new Map<string, string>();
    const named = context.coverages.map((c) => relative(c) ?? c);
    const information = orders.flatMap(coverageInformationOf);
    for (const info of information) {
      if (info.coverage && !named.includes(info.coverage)) named.push(info.coverage);
      if (info.coverage && info.assertionId && !assertions.has(info.coverage))
        assertions.set(info.coverage, info.assertionId);
    }
    // Only the patient's own coverages are used, whoever named them.
    let coverages = (await Promise.all(named.map((ref) => reader.read(...splitRef(ref))))).filter(
      (r): r is FhirResource => r !== undefined && belongsTo(r, patient),
    );
    if (coverages.length === 0) coverages = await reader.search('Coverage', { patient, status: 'active' });
    if (coverages.length === 0) throw new DtrError('NOT_FOUND', 'no active coverage for this patient in the EHR');
    // A coverage-assertion id without a coverage applies to the orders' coverages alike.
    const loose = information.find((i) => !i.coverage && i.assertionId)?.assertionId;
    if (loose) for (const c of coverages) if (!assertions.has(refOf(c))) assertions.set(refOf(c), loose);
    const encounter = this.encounterOf(session, orders);
    return {
      orders,
      coverages,
      assertions,
      ...(context.coverageAssertion ? { launchAssertion: context.coverageAssertion } : {}),
      questionnaires: context.questionnaires,
      ...(encounter ? { encounter } : {}),
    };
  }

  /** The orders the context names, directly or through a Task, read from the EHR and checked to be the patient's. */
  private async ordersInContext(
    context: DtrContext,
    patient: string,
    reader: FhirClientReader,
  ): Promise<FhirResource[]> {
    const refs = [...context.orders];
    // A resource of another patient is refused by the EHR (patient compartment) or by the check here alike.
    const read = (ref: string, what: string) =>
      reader.read(...splitRef(ref)).catch((error: unknown) => {
        if (DtrError.is(error) && error.details['status'] === 403)
          throw new DtrError('FORBIDDEN', `${what} in context is not for the patient in context`, { cause: error });
        throw error;
      });
    for (const ref of context.tasks) {
      const task = await read(ref, 'the Task');
      if (!task) throw new DtrError('NOT_FOUND', 'the Task in context could not be read from the EHR');
      if (!belongsTo(task, patient)) throw new DtrError('FORBIDDEN', 'the Task in context is not for this patient');
      for (const order of ordersOfTask(task)) if (!refs.includes(order)) refs.push(order);
    }
    if (refs.length === 0)
      throw new DtrError(
        'CONFLICT',
        'the launch named no order: choose the order that needs documentation (GET /api/session/order-candidates, then POST /api/session/context)',
      );
    const orders = (await Promise.all(refs.map((ref) => read(ref, 'the order')))).filter((r): r is FhirResource =>
      Boolean(r),
    );
    if (orders.length === 0) throw new DtrError('NOT_FOUND', 'the order in context could not be read from the EHR');
    if (orders.some((o) => !belongsTo(o, patient)))
      throw new DtrError('FORBIDDEN', 'the order in context is not for the patient in context');
    return orders;
  }

  /** The encounter of the launch, or one the EHR named in fhirContext, or the order itself when it is an Encounter. */
  private encounterOf(session: SessionRecord, orders: FhirResource[]): string | undefined {
    if (session.encounter) return `Encounter/${session.encounter}`;
    const fromContext = session.context.fhirContext.find(
      (c) => c.reference && (c.type ?? parseResourceReference(c.reference)?.type) === 'Encounter',
    )?.reference;
    const contextEncounter = parseResourceReference(fromContext);
    if (contextEncounter?.type === 'Encounter') return relativeReference(contextEncounter);
    const order = orders.find((o) => o.resourceType === 'Encounter');
    return order ? refOf(order) : undefined;
  }

  /** One payer: its package asked with its own coverages only, the prefill, and its forms opened. */
  private async forPayer(
    session: SessionRecord,
    reader: FhirClientReader,
    working: WorkingContext,
    { payer, coverages }: PayerGroup,
  ): Promise<{ payer: PayerQuestionnaires; results: Evaluated }> {
    const coverage = refOf(coverages[0]!);
    const assertion =
      working.launchAssertion ?? coverages.map((c) => working.assertions.get(refOf(c))).find((a) => a !== undefined);
    const client = await this.payerClients.forSession(payer, session);
    const retrieved = await this.retrieval.retrieve(client, {
      coverages,
      orders: working.orders,
      questionnaires: working.questionnaires,
      ...(assertion ? { context: assertion } : {}),
      patient: session.patient!,
      selectionScope: this.audit.hash(`${session.tenantId}|Patient/${session.patient}`),
    });
    const orders = working.orders.map(refOf);
    const encounter = working.encounter ? { encounter: working.encounter } : {};
    // One job for all questionnaires (reads, searches and defines shared), evaluated off the event loop by the pool;
    // the reader, and the EHR token in it, stay on this thread.
    const results = await this.pool.run(
      {
        pkg: retrieved.pkg,
        questionnaires: retrieved.questionnaires,
        patientId: session.patient!,
        order: orders[0]!,
        coverage,
        ...encounter,
        ...(session.fhirUser ? { user: session.fhirUser.replace(`${session.fhirBase}/`, '') } : {}),
        igVersion: payer.igVersion,
        // Value sets are searched with code:in where the EHR supports it (asked once per EHR, then remembered).
        codeIn: true,
        known: [...working.orders, ...working.coverages],
      },
      reader,
    );
    const opened = await this.forms.open(session, {
      payer,
      payerClient: client,
      pkg: retrieved.pkg,
      questionnaires: retrieved.questionnaires,
      prefills: results,
      orders,
      coverage,
      ...encounter,
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
    return {
      payer: {
        payer: { id: payer.id, name: payer.name },
        coverages: coverages.map(refOf),
        ...(assertion ? { coverageAssertion: assertion } : {}),
        questionnaires,
        packageIssues: retrieved.issues,
        payerOutcomes: retrieved.outcomes,
      },
      results,
    };
  }

  /** The registered payer of a coverage: by its payor identifiers, or those of the payor Organization it references. */
  private async payerFor(reader: FhirClientReader, coverage: FhirResource): Promise<RegisteredPayer | undefined> {
    const payer = await this.payers.forCoverage(coverage);
    if (payer) return payer;
    // The payor named by reference: its identifiers decide the payer (read from the EHR only when needed).
    const payors = ((coverage['payor'] as Array<{ reference?: string }> | undefined) ?? [])
      .map((p) => p.reference)
      .filter((ref): ref is string => typeof ref === 'string' && /^Organization\/[A-Za-z0-9\-.]{1,64}$/.test(ref));
    if (payors.length === 0) return undefined;
    // One the EHR will not show (scopes) leaves the coverage unmatched, as when it names no known payer.
    const organizations = await Promise.all(payors.map((ref) => reader.read(...splitRef(ref)).catch(() => undefined)));
    return this.payers.forCoverage(
      coverage,
      organizations.filter((o): o is FhirResource => Boolean(o)),
    );
  }
}
