import { Inject, Injectable } from '@nestjs/common';
import { AuditLog } from '@dtr/audit';
import { Clock, DtrError } from '@dtr/kernel';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { shapeResponse } from '@dtr/forms';
import { PackageCache, PayerClient, PayerRegistry } from '@dtr/payer';
import { FhirClientReader, type PrefillResult } from '@dtr/prefill';
import { BackendServicesClient, type OutboundPolicy, type SessionRecord, SmartSessions } from '@dtr/smart';
import { OUTBOUND_POLICY } from '../../smart/smart.module.js';
import { auditEhrAccess } from '../ehr-access-audit.js';
import { PrefillPool } from '../prefill-pool/prefill-pool.js';
import {
  containedContent,
  containedQuestionnaire,
  itemsNamed,
  linkIdsOf,
  onlyItems,
  payerExtensions,
  unusableQuestionnaire,
} from './adaptive.js';
import { type FormDefinitionRecord, FormSessionRepository, type FormSession } from './form-session.repository.js';
import { definitionOf, metaOf } from './form-view.js';
import { issueOf } from './form-sessions.service.js';
import { FormRulesPool, subjectOf } from './form-rules-pool.js';
import { type FormOutcome, FormsUseCase } from './forms.usecase.js';

/** A step the payer did not take: nothing the clinician entered is lost (it is kept here as the draft). */
export type NextQuestionOutcome = FormOutcome | { kind: 'payer-failed'; status: 502 | 504; message: string };

/**
 * Adaptive questionnaires, one step at a time: the clinician's answers are judged as a save is and kept here, sent to
 * the payer's `$next-question` (our Backend Services token, the payer's DTR version's shapes), and the payer's answer
 * becomes the form: its contained Questionnaire with the new questions, each new question prefilled from the EHR
 * (only the new ones: answers already given are not computed again), its status (`completed` when the payer says so)
 * and its coverage-information. The response is then saved in the EHR as any draft or completion is.
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#populating-adaptive-questionnaires (spec-70)
 */
@Injectable()
export class AdaptiveFormsUseCase {
  constructor(
    private readonly forms: FormSessionRepository,
    private readonly completion: FormsUseCase,
    private readonly smart: SmartSessions,
    private readonly payers: PayerRegistry,
    private readonly tokens: BackendServicesClient,
    private readonly cache: PackageCache,
    @Inject(OUTBOUND_POLICY) private readonly policy: OutboundPolicy,
    private readonly clock: Clock,
    private readonly pool: PrefillPool,
    private readonly audit: AuditLog,
    private readonly rules: FormRulesPool,
  ) {}

  async next(session: SessionRecord, id: string, body: unknown): Promise<NextQuestionOutcome> {
    const form = await this.completion.find(session, id);
    if (!form.definition.adaptive)
      throw new DtrError('CONFLICT', 'this questionnaire is not adaptive: complete it with $complete');
    this.completion.assertEditable(form);
    // 1. The answers so far, judged as a save is; the questions asked so far must be answered (DTR: the client does
    //    not ask for more until the current answers pass validation).
    const given = body !== undefined && body !== null && !(typeof body === 'object' && Object.keys(body).length === 0);
    const revised = await this.completion.revise(session, form, given ? body : (form.draft ?? form.prefill), true);
    if (!revised.ok) return { kind: 'invalid', problems: revised.problems };
    // 2. Kept here before the payer is asked: whatever the payer does, nothing entered is lost.
    const sent = shapeResponse(definitionOf(form), revised.response, metaOf(form, this.clock.now()), 'in-progress');
    await this.forms.saveDraft(form.id, {
      status: form.status === 'not-started' ? 'in-progress' : form.status,
      draft: sent,
      ehr: form.ehr,
    });
    // 3. The payer's next questions.
    const asked = await this.ask(form, sent);
    if ('failed' in asked) return asked.failed;
    const answer = asked.answer;
    const completed = answer['status'] === 'completed';
    const questionnaire = containedQuestionnaire(answer) ?? (completed ? form.definition.questionnaire : undefined);
    if (!questionnaire)
      return this.payerFailed(502, 'the payer answered without the contained Questionnaire of the next questions');
    const unusable = unusableQuestionnaire(questionnaire, form.questionnaire.url);
    if (unusable) return this.payerFailed(502, `the payer's answer cannot be used: ${unusable}`);
    // 4. The new questions, prefilled from the EHR; then the response is saved in the EHR (completed when the payer
    //    says it is complete).
    const fresh = [...linkIdsOf(questionnaire)].filter((l) => !linkIdsOf(form.definition.questionnaire).has(l));
    const step = await this.prefillNew(session, form, questionnaire, answer, new Set(fresh));
    const definition: FormDefinitionRecord = {
      ...form.definition,
      questionnaire,
      options: { ...form.definition.options, ...step.options },
      answerContext: { ...form.definition.answerContext, ...step.answerContext },
      sources: { ...form.definition.sources, ...step.sources },
      issues: [...form.definition.issues, ...step.issues],
      adaptive: { ...form.definition.adaptive, extensions: payerExtensions(answer) },
    };
    const prefill = {
      ...form.prefill,
      item: [...((form.prefill['item'] as unknown[] | undefined) ?? []), ...step.items],
    } as FhirResource;
    await this.forms.saveDefinition(form.id, definition, prefill);
    const next: FormSession = { ...form, definition, prefill, draft: sent };
    const merged = (await this.rules.run({ op: 'merge', form: definitionOf(next), saved: sent }, subjectOf(form)))
      .response;
    return this.completion.store(session, next, merged, completed ? 'completed' : 'in-progress');
  }

  /** `$next-question` at the payer (the adaptive extension's base when it is the payer's), failures told plainly. */
  private async ask(
    form: FormSession,
    sent: FhirResource,
  ): Promise<{ answer: FhirResource } | { failed: NextQuestionOutcome }> {
    const payer = await this.payers.get(form.payer.id);
    if (!payer) return { failed: this.payerFailed(502, `the payer ${form.payer.name} is no longer registered here`) };
    try {
      const tls = await this.payers.tlsCredentials(payer.id);
      const client = new PayerClient(payer, this.tokens, this.policy, this.clock, {
        timeoutMs: 15_000,
        retries: 0,
        ...(tls ? { tls } : {}),
      });
      return { answer: await client.nextQuestion(sent, form.definition.adaptive?.url) };
    } catch (error) {
      const timedOut = error instanceof DtrError && error.code === 'UPSTREAM_TIMEOUT';
      const reason = error instanceof Error ? error.message : 'unknown error';
      return {
        failed: this.payerFailed(
          timedOut ? 504 : 502,
          timedOut
            ? `${form.payer.name} did not answer in time for the next questions`
            : `${form.payer.name} did not give the next questions (${reason})`,
        ),
      };
    }
  }

  private payerFailed(status: 502 | 504, message: string): NextQuestionOutcome {
    return { kind: 'payer-failed', status, message: `${message}. Your answers are kept here: ask again later.` };
  }

  /**
   * The prefill of the new questions only, with the session's EHR reader through the prefill pool (the package's
   * libraries and value sets, and those the payer's answer contains). A prefill that fails leaves the new questions
   * unanswered, with an issue saying so: they stay answerable by hand.
   */
  private async prefillNew(
    session: SessionRecord,
    form: FormSession,
    questionnaire: FhirResource,
    answer: FhirResource,
    fresh: Set<string>,
  ): Promise<
    Pick<PrefillResult, 'options' | 'answerContext' | 'sources'> & {
      items: unknown[];
      issues: FormDefinitionRecord['issues'];
    }
  > {
    const none = { options: {}, answerContext: {}, sources: {}, items: [], issues: [] };
    if (fresh.size === 0) return none;
    const partial = onlyItems(questionnaire, fresh);
    try {
      const cached = await this.cache.package(form.payer.id);
      const pkg = cached.withQuestionnaires([partial]);
      const extra = QuestionnairePackage.fromResources(containedContent(answer));
      pkg.libraries.push(...extra.libraries);
      pkg.valueSets.push(...extra.valueSets);
      const { orders, coverage, encounter } = form.definition;
      const reader = new FhirClientReader(this.smart.fhirClient(session, 'supplement'));
      const [result] = await this.pool.run(
        {
          pkg,
          questionnaires: [partial],
          patientId: form.patient,
          ...(orders[0] ? { order: orders[0] } : {}),
          ...(coverage[0] ? { coverage: coverage[0] } : {}),
          ...(encounter ? { encounter } : {}),
          ...(session.fhirUser ? { user: session.fhirUser.replace(`${session.fhirBase}/`, '') } : {}),
          igVersion: form.igVersion,
          codeIn: true,
        },
        reader,
      );
      await auditEhrAccess(this.audit, session, form.patient, reader, { step: 'next-question' });
      if (!result) return none;
      return {
        options: result.options,
        answerContext: result.answerContext,
        sources: result.sources,
        items: itemsNamed(result.questionnaireResponse, fresh),
        issues: result.issues.map(issueOf),
      };
    } catch (error) {
      const reason = error instanceof Error ? error.message : 'unknown error';
      return {
        ...none,
        issues: [...fresh].map((linkId) => ({
          severity: 'warning',
          code: 'prefill-failed',
          message: `the new question could not be prefilled from the EHR (${reason.slice(0, 200)})`,
          linkId,
        })),
      };
    }
  }
}
