import { Injectable } from '@nestjs/common';
import { AuditLog } from '@dtr/audit';
import { Clock, DtrError } from '@dtr/kernel';
import type { FhirResource } from '@dtr/fhir';
import { type FormProblem, shapeResponse } from '@dtr/forms';
import { type SessionRecord, SmartSessions } from '@dtr/smart';
import { EhrResponses, type EhrSaveResult } from './ehr-responses.js';
import { FormRulesPool, subjectOf } from './form-rules-pool.js';
import type { Revised } from './form-rules-protocol.js';
import { FormSessionRepository, type FormSession } from './form-session.repository.js';
import { definitionOf, type FormSummary, type FormView, metaOf, summaryOf, viewOf } from './form-view.js';

/** What a save or completion came to; the controller turns each kind into its HTTP answer. */
export type FormOutcome =
  | { kind: 'ok'; view: FormView }
  /** The submitted response was refused: nothing was stored, the saved draft is untouched. */
  | { kind: 'invalid'; problems: FormProblem[] }
  /** The EHR holds a newer version by someone else (412): both are in the view. */
  | { kind: 'conflict'; view: FormView }
  /** The EHR write failed: the draft is kept here. */
  | { kind: 'ehr-failed'; status: 502 | 503; message: string; view: FormView };

/**
 * The clinician's side of form completion: list, open, save a draft, complete. The server is the arbiter of every
 * answer (validation, enableWhen, calculated values and information-origin are decided by `@dtr/forms`, never
 * taken from the page), in the form rules pool under its deadline: the payer's expressions never hold the event loop.
 * Every accepted save is kept here first, then written to the EHR with the supplement identity.
 */
@Injectable()
export class FormsUseCase {
  /** Forms (session and id) whose submitted response is being checked by the rules pool now, on this instance. */
  private readonly checking = new Set<string>();

  constructor(
    private readonly forms: FormSessionRepository,
    private readonly smart: SmartSessions,
    private readonly clock: Clock,
    private readonly audit: AuditLog,
    private readonly rules: FormRulesPool,
  ) {}

  async list(session: SessionRecord): Promise<{ responses: FormSummary[] }> {
    return { responses: (await this.forms.summariesForSession(session.idHash)).map(summaryOf) };
  }

  async view(session: SessionRecord, id: string): Promise<FormView> {
    return viewOf(await this.find(session, id));
  }

  async save(session: SessionRecord, id: string, body: unknown): Promise<FormOutcome> {
    const form = await this.find(session, id);
    this.assertEditable(form);
    const revised = await this.revise(session, form, body);
    if (!revised.ok) return { kind: 'invalid', problems: revised.problems };
    return this.store(session, form, revised.response, 'in-progress');
  }

  /** Completes only on request and only when no required enabled item is empty; saves the given response first. */
  async complete(session: SessionRecord, id: string, body: unknown): Promise<FormOutcome> {
    const form = await this.find(session, id);
    this.assertEditable(form);
    if (form.definition.adaptive)
      throw new DtrError(
        'CONFLICT',
        'the payer decides when an adaptive questionnaire is complete: ask it for the next questions ($next-question)',
      );
    const given = body !== undefined && body !== null && !(typeof body === 'object' && Object.keys(body).length === 0);
    const revised = await this.revise(session, form, given ? body : (form.draft ?? form.prefill), true);
    if (!revised.ok) return { kind: 'invalid', problems: revised.problems };
    return this.store(session, form, revised.response, 'completed');
  }

  async find(session: SessionRecord, id: string): Promise<FormSession> {
    const form = await this.forms.get(session.idHash, id);
    if (!form) throw new DtrError('NOT_FOUND', 'no such questionnaire response in this session');
    return form;
  }

  assertEditable(form: FormSession): void {
    if (form.status === 'completed')
      throw new DtrError('CONFLICT', 'this questionnaire response is completed; it is no longer changed here');
    if (form.status === 'stopped')
      throw new DtrError('CONFLICT', `this questionnaire response was stopped: ${form.stoppedReason ?? 'no reason'}`);
  }

  /**
   * The submitted response judged against the form (the same rules for a save, a completion and a next step); with
   * `complete`, the completion checks too. Rules that do not finish within the deadline fail the request (504)
   * before anything is stored.
   */
  async revise(session: SessionRecord, form: FormSession, body: unknown, complete = false): Promise<Revised> {
    assertSamePatient(body, session, form);
    // An adaptive response's Questionnaire is the one we hold (contained, `#id`), never what the page names.
    const submitted =
      form.definition.adaptive && body && typeof body === 'object'
        ? Object.fromEntries(Object.entries(body).filter(([k]) => k !== 'questionnaire' && k !== 'contained'))
        : body;
    // One check per form at a time: a page (or script) sending saves faster than the rules finish would otherwise
    // hold every rules worker with the same form.
    const key = `${session.idHash}:${form.id}`;
    if (this.checking.has(key))
      throw new DtrError(
        'CONFLICT',
        'a save of this questionnaire response is still being checked: wait for it to finish, then save again',
      );
    this.checking.add(key);
    try {
      return await this.rules.run(
        {
          op: 'revise',
          form: definitionOf(form),
          submitted,
          previous: form.draft,
          author: form.definition.author,
          meta: metaOf(form, this.clock.now()),
          complete,
        },
        subjectOf(form),
      );
    } finally {
      this.checking.delete(key);
    }
  }

  /**
   * 1. the shaped response is kept here (a failing EHR never loses it); 2. it is written to the EHR (create, then
   * update with If-Match); 3. what the EHR answered is recorded. A completion counts only once the EHR holds it.
   */
  async store(
    session: SessionRecord,
    form: FormSession,
    revised: FhirResource,
    status: 'in-progress' | 'completed',
  ): Promise<FormOutcome> {
    const now = this.clock.now();
    const shaped = shapeResponse(definitionOf(form), revised, metaOf(form, now), status);
    const draftStatus = form.status === 'not-started' ? 'in-progress' : form.status;
    await this.forms.saveDraft(form.id, { status: draftStatus, draft: shaped, ehr: form.ehr });
    const ehr = new EhrResponses(this.smart.fhirClient(session, 'supplement', { timeoutMs: 10_000, retries: 1 }));
    const result = await ehr.save(shaped, form.ehr, now);
    await this.audit.record({
      kind: 'qr-save',
      action: form.ehr.id ? 'U' : 'C',
      outcome: result.kind === 'saved' ? '0' : result.kind === 'conflict' ? '4' : '8',
      tenantId: session.tenantId,
      sessionIdHash: session.idHash,
      patientHash: this.audit.hash(`Patient/${form.patient}`),
      agents: [
        ...(session.fhirUser ? [{ type: 'user' as const, who: session.fhirUser, requestor: true }] : []),
        { type: 'client', who: 'supplement', requestor: false },
      ],
      entities: [
        {
          what: result.kind === 'saved' ? this.audit.hash(`QuestionnaireResponse/${result.id}`) : form.id,
          type: 'QuestionnaireResponse',
          role: '4',
          detail: { status, ...(result.kind === 'saved' && result.versionId ? { version: result.versionId } : {}) },
        },
      ],
      detail: { result: result.kind },
    });
    return this.record(session, form, shaped, status, result);
  }

  private async record(
    session: SessionRecord,
    form: FormSession,
    shaped: FhirResource,
    status: 'in-progress' | 'completed',
    result: EhrSaveResult,
  ): Promise<FormOutcome> {
    if (result.kind === 'saved') {
      const stored = { ...shaped, id: result.id, meta: { ...(result.stored.meta ?? {}) } };
      const ehr = {
        id: result.id,
        ...(result.versionId ? { versionId: result.versionId } : {}),
        savedAt: result.savedAt,
      };
      await this.forms.saveDraft(form.id, { status, draft: stored, ehr, conflict: null });
      return { kind: 'ok', view: await this.view(session, form.id) };
    }
    const draftStatus = form.status === 'not-started' ? 'in-progress' : form.status;
    if (result.kind === 'conflict') {
      // The next save is made on top of their version: the clinician has now seen both.
      const theirs = result.theirs;
      const versionId = theirs?.meta?.versionId ?? form.ehr.versionId;
      await this.forms.saveDraft(form.id, {
        status: draftStatus,
        draft: shaped,
        ehr: { ...form.ehr, ...(versionId ? { versionId } : {}), error: result.message },
        ...(theirs ? { conflict: theirs } : {}),
      });
      return { kind: 'conflict', view: await this.view(session, form.id) };
    }
    const message =
      status === 'completed' ? `Not completed yet: ${result.message.replace(/^The/, 'the')}` : result.message;
    await this.forms.saveDraft(form.id, { status: draftStatus, draft: shaped, ehr: { ...form.ehr, error: message } });
    return { kind: 'ehr-failed', status: result.status, message, view: await this.view(session, form.id) };
  }
}

/** A response for another patient than the session's is refused outright (403), whatever else it holds. */
function assertSamePatient(body: unknown, session: SessionRecord, form: FormSession): void {
  const subject = (body as { subject?: { reference?: unknown } } | null)?.subject?.reference;
  if (subject === undefined) return;
  const ok =
    typeof subject === 'string' &&
    (subject === `Patient/${form.patient}` || subject === `${session.fhirBase}/Patient/${form.patient}`);
  if (!ok) throw new DtrError('FORBIDDEN', "the response's subject is not the patient of this session");
}
