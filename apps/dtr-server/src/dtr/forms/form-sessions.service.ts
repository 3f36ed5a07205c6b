import { Injectable } from '@nestjs/common';
import { Clock } from '@dtr/kernel';
import type { FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { expiredQuestionnaire, shapeResponse } from '@dtr/forms';
import { type PayerClient, RUNTIME_REPORTED } from '@dtr/payer';
import type { AnswerSource, PrefillIssue } from '@dtr/prefill';
import { dtrContextOf, type SessionRecord, SmartSessions } from '@dtr/smart';
import { contextReferences, EhrResponses, sameReference } from './ehr-responses.js';
import {
  type FormDefinitionRecord,
  FormSessionRepository,
  type FormSession,
  type IgVersion,
  type NewFormSession,
} from './form-session.repository.js';
import { FormRulesPool, subjectOf } from './form-rules-pool.js';
import type { Merged } from './form-rules-protocol.js';
import { definitionOf, metaOf } from './form-view.js';
import {
  adaptiveOf,
  automaticOnly,
  containedQuestionnaire,
  payerExtensions,
  startingQuestionnaire,
} from './adaptive.js';

/** What the prepare step hands over for a session: the package and one prefill per questionnaire. */
export interface PreparedForms {
  payer: { id: string; name: string; igVersion: IgVersion };
  payerClient: PayerClient;
  pkg: QuestionnairePackage;
  questionnaires: FhirResource[];
  prefills: Array<{
    questionnaireResponse: FhirResource;
    issues: PrefillIssue[];
    options: Record<string, Array<Record<string, unknown>>>;
    answerContext: Record<string, unknown[]>;
    sources?: Record<string, AnswerSource[]>;
  }>;
  orders: string[];
  coverage: string;
  encounter?: string;
}

type Opened = Pick<FormSession, 'id' | 'status'> & { resumedFrom?: string };

/**
 * Opens a session's forms after prefill: one `form_session` row per questionnaire, resumed from the EHR when it
 * holds a response for this patient, questionnaire and order (the one the launch named, else an in-progress one
 * found by the DTR resume search), with the fresh prefill merged in (`override`/`manual` answers never change).
 * A questionnaire whose effectivePeriod has ended is `stopped`, the clinician told why and the payer told too.
 * @see https://hl7.org/fhir/us/davinci-dtr/specification.html (resuming, relaunch, expired questionnaires)
 */
@Injectable()
export class FormSessionsService {
  constructor(
    private readonly forms: FormSessionRepository,
    private readonly smart: SmartSessions,
    private readonly clock: Clock,
    private readonly rules: FormRulesPool,
  ) {}

  async open(session: SessionRecord, prepared: PreparedForms): Promise<Opened[]> {
    const ehr = new EhrResponses(this.smart.fhirClient(session, 'supplement', { timeoutMs: 10_000, retries: 1 }));
    const author = await this.author(session);
    const { saved, named, issue } = await this.savedResponses(session, ehr);
    // Preparing again in the same session keeps each form (its id, and a draft the EHR may not hold yet).
    const earlier = (await this.forms.listForSession(session.idHash)).filter((f) => f.payer.id === prepared.payer.id);
    const rows: NewFormSession[] = [];
    for (const [i, questionnaire] of prepared.questionnaires.entries()) {
      const prefill = prepared.prefills[i]!;
      const adaptive = adaptiveOf(questionnaire);
      const definition: FormDefinitionRecord = {
        // An adaptive form starts from the package's Questionnaire, contained; the payer adds the questions.
        questionnaire: adaptive ? startingQuestionnaire(questionnaire) : questionnaire,
        ...(adaptive ? { adaptive } : {}),
        valueSets: valueSetsOf(questionnaire, prepared.pkg),
        issues: [...prefill.issues.flatMap((i) => issuesOnItems(questionnaire, i)), ...(issue ? [issue] : [])],
        options: prefill.options,
        answerContext: prefill.answerContext,
        sources: prefill.sources ?? {},
        orders: prepared.orders,
        coverage: [prepared.coverage],
        ...(prepared.encounter ? { encounter: prepared.encounter } : {}),
        author,
      };
      const row: NewFormSession = {
        sessionIdHash: session.idHash,
        tenantId: session.tenantId,
        patient: session.patient!,
        payer: { id: prepared.payer.id, name: prepared.payer.name },
        questionnaire: {
          url: String(questionnaire['url'] ?? `Questionnaire/${questionnaire.id ?? ''}`),
          ...(typeof questionnaire['version'] === 'string' ? { version: questionnaire['version'] } : {}),
          ...(typeof questionnaire['title'] === 'string' ? { title: questionnaire['title'] } : {}),
        },
        igVersion: prepared.payer.igVersion,
        status: 'not-started',
        definition,
        prefill: prefill.questionnaireResponse,
        ehr: {},
      };
      const prior = earlier.find((f) => f.questionnaire.url === row.questionnaire.url);
      if (prior) row.id = prior.id;
      const match = saved.find(
        (r) => sameQuestionnaire(r, row.questionnaire.url) && forOrders(r, prepared.orders, named),
      );
      // The fresh prefill merged in by the form rules (in their pool, under its deadline).
      const merge = (saved: FhirResource): Promise<Merged> =>
        this.rules.run({ op: 'merge', form: definitionOf(row), saved }, subjectOf(row));
      try {
        if (prior?.draft) await carryOver(row, prior, merge);
        else if (match) await resume(row, match, merge);
        await this.stopIfExpired(row, ehr, prepared);
      } catch {
        // A draft of this session is kept as it was (never lost); otherwise the form starts from the fresh prefill.
        // Either way the clinician is told.
        Object.assign(row, {
          status: prior?.draft ? prior.status : 'not-started',
          ehr: prior?.draft ? prior.ehr : {},
          draft: prior?.draft,
        });
        delete row.definition.resumed;
        row.definition.issues.push({
          severity: 'error',
          code: 'resume-failed',
          message: prior?.draft
            ? 'The new prefill could not be merged into the saved draft; the draft is shown as it was saved.'
            : 'The saved response could not be continued here; this form starts again from the prefill.',
        });
      }
      rows.push(row);
    }
    const created = await this.forms.replaceForSession(session.idHash, rows, prepared.payer.id);
    // Forms new to this session: their logic's failures during prefill go to the payer, once per questionnaire.
    await this.reportRuntimeFailures(
      session,
      prepared,
      prepared.questionnaires.filter(
        (_, i) => !earlier.some((f) => f.questionnaire.url === rows[i]!.questionnaire.url),
      ),
    );
    return created.map((f) => ({
      id: f.id,
      status: f.status,
      ...(f.definition.resumed ? { resumedFrom: f.definition.resumed.from } : {}),
    }));
  }

  /** After a prepare: the forms of payers it did not involve (another order, another coverage) are dropped. */
  retainPayers(session: SessionRecord, payerIds: string[]): Promise<void> {
    return this.forms.removeOtherPayers(session.idHash, payerIds);
  }

  /**
   * The responses the EHR holds that this launch may continue: the one(s) the launch named (fhirContext or legacy
   * appContext `response=`), then the patient's in-progress ones. A failed search is an issue, not a failed launch.
   */
  private async savedResponses(
    session: SessionRecord,
    ehr: EhrResponses,
  ): Promise<{ saved: FhirResource[]; named: Set<string>; issue?: FormDefinitionRecord['issues'][number] }> {
    const named = dtrContextOf(session.context).questionnaireResponses;
    try {
      const fromLaunch = await Promise.all(
        named.map((ref) =>
          ehr.read(
            ref
              .replace(/\/_history\/.*$/, '')
              .split('/')
              .at(-1)!,
          ),
        ),
      );
      const launched = fromLaunch.filter(
        (r): r is FhirResource =>
          r !== undefined && (r['status'] === 'in-progress' || r['status'] === 'completed') && isFor(r, session),
      );
      const searched = await ehr.inProgress(session.patient!);
      const byNewest = (a: FhirResource, b: FhirResource) =>
        String(b.meta?.lastUpdated ?? '').localeCompare(String(a.meta?.lastUpdated ?? ''));
      return {
        saved: [...launched, ...searched.filter((r) => isFor(r, session)).sort(byNewest)],
        named: new Set(launched.map((r) => r.id!)),
      };
    } catch {
      return {
        saved: [],
        named: new Set(),
        issue: {
          severity: 'warning',
          code: 'resume-search-failed',
          message: 'Saved responses in the EHR could not be searched; this form starts from the prefill.',
        },
      };
    }
  }

  /** The signed-in practitioner (id_token fhirUser) and the PractitionerRole the launch named, with a display name. */
  private async author(session: SessionRecord): Promise<FormDefinitionRecord['author']> {
    const user = session.fhirUser?.startsWith(`${session.fhirBase}/`)
      ? session.fhirUser.slice(session.fhirBase.length + 1)
      : session.fhirUser;
    const role = session.context.fhirContext.find(
      (c) => c.reference && (c.type ?? c.reference.split('/').at(-2)) === 'PractitionerRole',
    )?.reference;
    if (!user || !/^(Practitioner|PractitionerRole)\/(?!\.+(?:\/|$))[A-Za-z0-9\-.]{1,64}$/.test(user)) return {};
    const [type, id] = user.split('/') as [string, string];
    let display: string | undefined;
    try {
      const client = this.smart.fhirClient(session, 'supplement', { timeoutMs: 5000, retries: 0 });
      const found = await client.read<
        FhirResource & { name?: Array<{ text?: string; given?: string[]; family?: string }> }
      >(type, id);
      const name = found?.name?.[0];
      display = name?.text ?? ([...(name?.given ?? []), name?.family].filter(Boolean).join(' ') || undefined);
    } catch {
      display = undefined;
    }
    return {
      ...(type === 'Practitioner' ? { practitioner: user } : { practitionerRole: user }),
      ...(role ? { practitionerRole: role.replace(/^.*\/(PractitionerRole\/[^/]+)$/, '$1') } : {}),
      ...(display ? { display } : {}),
    };
  }

  /**
   * Runtime failures of a questionnaire's CQL/FHIRPath during prefill, reported with `$log-questionnaire-errors`:
   * deduplicated (code, library, define, item), without the engine's messages (they may quote patient data). A payer
   * that cannot take the report does not stop the forms.
   */
  private async reportRuntimeFailures(
    session: SessionRecord,
    prepared: PreparedForms,
    fresh: FhirResource[],
  ): Promise<void> {
    for (const questionnaire of fresh) {
      const i = prepared.questionnaires.indexOf(questionnaire);
      const seen = new Set<string>();
      const failures = (prepared.prefills[i]?.issues ?? []).filter((issue) => {
        const key = [issue.code, issue.library, issue.define, issue.linkId].join('|');
        if (!RUNTIME_REPORTED.has(issue.code) || seen.has(key)) return false;
        seen.add(key);
        return true;
      });
      if (failures.length === 0) continue;
      await prepared.payerClient
        .logQuestionnaireErrors(prepared.pkg.questionnaireKey(questionnaire), failures, session.fhirBase)
        .catch(() => undefined);
    }
  }

  /** effectivePeriod ended: the form is stopped, the EHR copy (if any) too, and the payer is told (no PHI). */
  private async stopIfExpired(row: NewFormSession, ehr: EhrResponses, prepared: PreparedForms): Promise<void> {
    const now = this.clock.now();
    const reason = expiredQuestionnaire(row.definition.questionnaire, now);
    if (!reason || row.status === 'completed' || row.status === 'stopped') return;
    row.status = 'stopped';
    row.stoppedReason = reason;
    const stopped = shapeResponse(definitionOf(row), row.draft ?? row.prefill, metaOf(row, now), 'stopped');
    row.draft = stopped;
    if (row.ehr.id) {
      const result = await ehr.save(stopped, row.ehr, now);
      if (result.kind === 'saved') row.ehr = { id: result.id, versionId: result.versionId, savedAt: result.savedAt };
      else row.ehr = { ...row.ehr, error: result.message };
    }
    const canonical = `${row.questionnaire.url}${row.questionnaire.version ? `|${row.questionnaire.version}` : ''}`;
    await prepared.payerClient
      .logQuestionnaireErrors(canonical, [
        { severity: 'error', code: 'questionnaire-expired', message: reason, questionnaire: canonical },
      ])
      .catch(() => undefined);
  }
}

function isFor(response: FhirResource, session: SessionRecord): boolean {
  const subject = (response['subject'] as { reference?: string } | undefined)?.reference;
  return typeof subject === 'string' && sameReference(subject, `Patient/${session.patient}`);
}

/** The response answers this questionnaire: by canonical, or (adaptive) by its contained Questionnaire's url. */
function sameQuestionnaire(response: FhirResource, url: string): boolean {
  const contained = containedQuestionnaire(response);
  const canonical = contained ? contained['url'] : response['questionnaire'];
  return typeof canonical === 'string' && canonical.split('|')[0] === url;
}

/**
 * An adaptive form continues with the Questionnaire so far (contained in the saved response, or this session's own
 * earlier one) and its prefill: the questions asked are not asked, nor their answers computed, again.
 */
function continueAdaptive(row: NewFormSession, from: { questionnaire?: FhirResource; prior?: FormSession }): void {
  if (!row.definition.adaptive) return;
  const { prior } = from;
  if (prior?.definition.adaptive) {
    const { questionnaire, adaptive, options, answerContext, sources, issues } = prior.definition;
    Object.assign(row.definition, { questionnaire, adaptive, options, answerContext, sources, issues });
    row.prefill = prior.prefill;
  } else if (from.questionnaire) {
    row.definition.questionnaire = from.questionnaire;
  }
}

/** A response named by the launch is taken as is; a searched one must carry one of this launch's orders in its context. */
function forOrders(response: FhirResource, orders: string[], named: Set<string>): boolean {
  if (response.id && named.has(response.id)) return true;
  const refs = contextReferences(response);
  return orders.some((order) => refs.some((ref) => sameReference(ref, order)));
}

type Merge = (saved: FhirResource) => Promise<Merged>;

/** Continues a saved response: the fresh prefill merged in, the EHR id and version kept for the next update. */
async function resume(row: NewFormSession, saved: FhirResource, merge: Merge): Promise<void> {
  const contained = containedQuestionnaire(saved);
  if (row.definition.adaptive && contained) {
    continueAdaptive(row, { questionnaire: contained });
    row.definition.adaptive = { ...row.definition.adaptive, extensions: payerExtensions(saved) };
    row.prefill = automaticOnly(saved);
  }
  const merged = await merge(saved);
  row.draft = merged.response;
  row.status = saved['status'] === 'completed' ? 'completed' : 'in-progress';
  row.ehr = { id: saved.id!, ...(saved.meta?.versionId ? { versionId: saved.meta.versionId } : {}) };
  row.definition.resumed = { from: `QuestionnaireResponse/${saved.id}`, updated: merged.updated, added: merged.added };
}

/** The session's own earlier form: its draft (fresh prefill merged in while it is open), EHR state and conflict. */
async function carryOver(row: NewFormSession, prior: FormSession, merge: Merge): Promise<void> {
  continueAdaptive(row, { prior });
  const open = prior.status === 'in-progress' || prior.status === 'not-started';
  row.draft = open ? (await merge(prior.draft!)).response : prior.draft!;
  row.status = prior.status;
  row.ehr = prior.ehr;
  if (prior.stoppedReason) row.stoppedReason = prior.stoppedReason;
  if (prior.conflict) row.conflict = prior.conflict;
  if (prior.definition.resumed) row.definition.resumed = prior.definition.resumed;
}

/**
 * A define that failed affects every item whose expressions name it: the issue is shown on each of those items (the
 * page puts it beside the item, which stays answerable by hand). An issue naming no item, or a define no item names,
 * stays one issue of the whole form.
 */
function issuesOnItems(
  questionnaire: FhirResource,
  issue: PrefillIssue,
): Array<FormDefinitionRecord['issues'][number]> {
  const define = issue.define;
  if (issue.linkId || !define) return [issueOf(issue)];
  const names = new RegExp(`(^|[."\\s])"?${define.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"?($|[^A-Za-z0-9_])`);
  const affected: string[] = [];
  const visit = (items: unknown) => {
    if (!Array.isArray(items)) return;
    for (const item of items as Array<{ linkId?: string; extension?: unknown[]; item?: unknown }>) {
      if (item.linkId && expressionsIn(item.extension).some((e) => names.test(e))) affected.push(item.linkId);
      visit(item.item);
    }
  };
  visit(questionnaire['item']);
  return affected.length > 0 ? affected.map((linkId) => issueOf({ ...issue, linkId })) : [issueOf(issue)];
}

/** Every `expression` string in an item's extensions (valueExpression, and legacy nested ones). */
function expressionsIn(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(expressionsIn);
  if (!value || typeof value !== 'object') return [];
  return Object.entries(value as Record<string, unknown>).flatMap(([key, v]) =>
    key === 'expression' && typeof v === 'string' ? [v] : expressionsIn(v),
  );
}

/** A prefill issue as a form stores it. */
export function issueOf(issue: PrefillIssue): FormDefinitionRecord['issues'][number] {
  return {
    severity: issue.severity,
    code: issue.code,
    message: issue.message,
    ...(issue.linkId ? { linkId: issue.linkId } : {}),
  };
}

/** The package ValueSets the questionnaire's items name in answerValueSet (contained ones travel with it). */
function valueSetsOf(questionnaire: FhirResource, pkg: QuestionnairePackage): FhirResource[] {
  const urls = new Set<string>();
  const visit = (items: unknown) => {
    if (!Array.isArray(items)) return;
    for (const item of items as Array<Record<string, unknown>>) {
      const vs = item['answerValueSet'];
      if (typeof vs === 'string' && !vs.startsWith('#')) urls.add(vs);
      visit(item['item']);
    }
  };
  visit(questionnaire['item']);
  return [...urls].map((url) => pkg.valueSetByUrl(url)).filter((v): v is FhirResource => v !== undefined);
}
