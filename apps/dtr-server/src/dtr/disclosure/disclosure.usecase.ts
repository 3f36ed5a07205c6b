import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { AuditLog } from '@dtr/audit';
import {
  consentRestriction,
  type ConsentRestriction,
  answerReferences,
  pseudonymizeIds,
  questionnaireResponseBundle,
  routeRequest,
  SubmissionRepository,
  type Submission,
  withholdAnswers,
} from '@dtr/disclosure';
import type { FhirResource, HttpFhirClient } from '@dtr/fhir';
import { Clock, DtrError } from '@dtr/kernel';
import { type Payer, PayerRegistry } from '@dtr/payer';
import { type SessionRecord, SessionStore, SmartSessions, TenantRegistry } from '@dtr/smart';
import { APP_CONFIG, type AppConfig } from '../../config/app.config.js';
import { FormSessionRepository, type FormSession } from '../forms/form-session.repository.js';
import { DisclosureAudit } from './disclosure-audit.js';
import {
  type Flags,
  flagsOf,
  type ReviewedAnswer,
  type ReviewedResource,
  readChoices,
  withheldItems,
} from './disclosure-review.js';
import { DeliveryWorker } from './delivery.worker.js';
import { EhrCopy, sha1Base64, sha256Hex } from './ehr-copy.js';
import { type SubmissionView, submissionView } from './submission-view.js';

export interface DisclosureReview {
  formId: string;
  questionnaire: { url: string; title?: string };
  payer: { id: string; name: string; route: string; igVersion: string };
  authorization: { mode: string; authorized: boolean; singleClient: boolean };
  consents: 'checked' | 'unavailable';
  answers: ReviewedAnswer[];
  resources: ReviewedResource[];
  needsChoice: string[];
  submission?: SubmissionView;
}

export type SendOutcome =
  | { kind: 'queued' | 'existing'; submission: SubmissionView }
  | { kind: 'write-back-failed'; status: number; message: string; submission: SubmissionView };

const EHR_TIMEOUTS = { timeoutMs: 10_000, retries: 1 };

/**
 * "Send to payer": the review of exactly what would leave (sensitive answers and resources flagged for an explicit
 * choice), then per questionnaire response and payer one submission whose bytes are fixed once, written into the EHR
 * with the disclose identity and verified there, and only then queued for delivery. Reads use the launch identity;
 * the copy is written with the disclose identity only.
 */
@Injectable()
export class DisclosureUseCase implements OnModuleInit {
  constructor(
    private readonly forms: FormSessionRepository,
    private readonly smart: SmartSessions,
    private readonly tenants: TenantRegistry,
    private readonly payers: PayerRegistry,
    private readonly submissions: SubmissionRepository,
    private readonly audit: AuditLog,
    private readonly worker: DeliveryWorker,
    private readonly clock: Clock,
    private readonly sessions: SessionStore,
    @Inject(APP_CONFIG) private readonly config: Pick<AppConfig, 'delivery'>,
  ) {}

  onModuleInit(): void {
    this.worker.beforeEachRound(() => this.resumeAbandoned());
  }

  /**
   * Write-backs an instance started and never finished (it died): taken over once their lease has run out, with the
   * session's own disclose token; when the session is gone, the submission is marked failed and the clinician sends
   * again from a new launch (the same submission: its bytes do not change).
   */
  async resumeAbandoned(): Promise<void> {
    for (const submission of await this.submissions.abandonedWriteBacks()) {
      if (!(await this.submissions.claimWriteBack(submission.id, this.config.delivery.writeBackLeaseMs))) continue;
      const session = await this.sessions.findByHash(submission.sessionIdHash);
      const form = session ? await this.forms.get(session.idHash, submission.formId) : undefined;
      const payer = await this.payers.get(submission.payerId);
      let client: string | undefined;
      if (session && form && payer) client = await this.assertDiscloseIdentity(session).catch(() => undefined);
      if (!session || !form || !payer || !client) {
        await this.submissions.writeBackFailed(
          submission.id,
          'the session ended before the copy was stored in the EHR; nothing was sent; send again from a new launch',
        );
        continue;
      }
      await this.writeBack(session, form, payer, submission, client);
    }
  }

  async review(session: SessionRecord, formId: string): Promise<DisclosureReview> {
    const { form, qr, payer } = await this.sendable(session, formId);
    const flags = await this.flags(session, form, qr, payer);
    const tenant = await this.tenants.get(session.tenantId);
    const existing = await this.submissions.forResponse(session.tenantId, form.ehr.id!, payer.id);
    return {
      formId: form.id,
      questionnaire: {
        url: form.questionnaire.url,
        ...(form.questionnaire.title ? { title: form.questionnaire.title } : {}),
      },
      payer: { id: payer.id, name: payer.name, route: payer.submissionRoute, igVersion: payer.igVersion },
      authorization: {
        mode: tenant?.discloseMode ?? 'user-delegated',
        authorized: await this.discloseReady(session),
        singleClient: Boolean(tenant?.singleClient),
      },
      consents: flags.restriction ? 'checked' : 'unavailable',
      answers: flags.answers,
      resources: flags.resources,
      needsChoice: flags.needsChoice,
      ...(existing ? { submission: submissionView(existing) } : {}),
    };
  }

  async send(session: SessionRecord, formId: string, body: unknown): Promise<SendOutcome> {
    const { form, qr, payer } = await this.sendable(session, formId);
    const existing = await this.submissions.forResponse(session.tenantId, form.ehr.id!, payer.id);
    if (existing && existing.state !== 'write-back-failed' && existing.state !== 'writing-back')
      return { kind: 'existing', submission: submissionView(existing) };
    const discloseClientId = await this.assertDiscloseIdentity(session);
    let submission: Submission;
    if (existing) {
      submission = existing;
    } else {
      const flags = await this.flags(session, form, qr, payer);
      const choices = readChoices(body, flags.needsChoice);
      const built = await this.build(session, form, qr, payer, choices);
      const made = await this.submissions.createOrGet(built);
      submission = made.submission;
      if (!made.created && submission.state !== 'write-back-failed' && submission.state !== 'writing-back')
        return { kind: 'existing', submission: submissionView(submission) };
      if (made.created)
        await new DisclosureAudit(this.audit, session).chosen(
          submission,
          flags,
          discloseClientId,
          await this.tenants.get(session.tenantId),
        );
    }
    // One writer at a time: a second click while the copy is being written answers the submission as it stands.
    if (!(await this.submissions.claimWriteBack(submission.id, this.config.delivery.writeBackLeaseMs)))
      return { kind: 'existing', submission: submissionView((await this.submissions.get(submission.id))!) };
    return this.writeBack(session, form, payer, submission, discloseClientId);
  }

  async list(session: SessionRecord): Promise<{ submissions: SubmissionView[] }> {
    return { submissions: (await this.submissions.forSession(session.idHash)).map((s) => submissionView(s)) };
  }

  async get(session: SessionRecord, id: string): Promise<SubmissionView> {
    const found = await this.submissions.get(id);
    if (!found || found.sessionIdHash !== session.idHash)
      throw new DtrError('NOT_FOUND', 'no such submission in this session');
    return submissionView(found, true);
  }

  private async sendable(
    session: SessionRecord,
    formId: string,
  ): Promise<{ form: FormSession; qr: FhirResource; payer: Payer }> {
    const form = await this.forms.get(session.idHash, formId);
    if (!form) throw new DtrError('NOT_FOUND', 'no such questionnaire response in this session');
    if (form.status !== 'completed' || !form.draft || !form.ehr.id)
      throw new DtrError('CONFLICT', 'only a completed response, stored in the EHR, can be sent to the payer');
    const payer = await this.payers.get(form.payer.id);
    if (!payer) throw new DtrError('CONFLICT', `the payer ${form.payer.name} is no longer registered`);
    return { form, qr: form.draft, payer };
  }

  private async flags(
    session: SessionRecord,
    form: FormSession,
    qr: FhirResource,
    payer: Payer,
  ): Promise<Flags & { restriction?: ConsentRestriction }> {
    const ehr = this.smart.fhirClient(session, 'supplement', EHR_TIMEOUTS);
    const referenced = await readAll(ehr, answerReferences(qr));
    const restriction = await this.consents(ehr, form, payer);
    return {
      ...flagsOf(form.definition.questionnaire, qr, form.definition.sources ?? {}, referenced, restriction),
      ...(restriction ? { restriction } : {}),
    };
  }

  /** The patient's active Consents, as they apply to this payer; `undefined` when the EHR cannot be asked. */
  private async consents(
    ehr: HttpFhirClient,
    form: FormSession,
    payer: Payer,
  ): Promise<ConsentRestriction | undefined> {
    try {
      const found = await ehr.search('Consent', { patient: form.patient, status: 'active' });
      // Consents not all seen are Consents unknown: treated as restricting everything.
      if (found.truncated) return undefined;
      const consents = found.resources;
      const coverage = form.definition.coverage[0]
        ? await ehr.read('Coverage', form.definition.coverage[0].split('/').pop()!)
        : undefined;
      const payors = ((coverage?.['payor'] as Array<{ reference?: string }> | undefined) ?? []).flatMap((p) =>
        p.reference ? [p.reference] : [],
      );
      return consentRestriction(consents, { references: payors, identifiers: payer.coverageIdentifiers });
    } catch {
      return undefined;
    }
  }

  private async discloseReady(session: SessionRecord): Promise<boolean> {
    try {
      await this.smart.token(session, 'disclose');
      return true;
    } catch {
      return false;
    }
  }

  /** The token at hand must be the disclose registration's (or the tenant is marked single-client). */
  private async assertDiscloseIdentity(session: SessionRecord): Promise<string> {
    const tenant = await this.tenants.get(session.tenantId);
    if (!tenant) throw new DtrError('UNAUTHENTICATED', 'the session tenant no longer exists');
    let token;
    try {
      token = await this.smart.token(session, 'disclose');
    } catch {
      throw new DtrError(
        'FORBIDDEN',
        'sending to the payer needs the disclosure authorization first (POST /disclose/authorize: the button on the app page)',
        {
          details: { authorize: '/disclose/authorize' },
        },
      );
    }
    const disclose = tenant.registrations.find((r) => r.purpose === 'disclose')?.clientId;
    if (!tenant.singleClient && token.clientId !== disclose)
      throw new DtrError('FORBIDDEN', 'the token at hand is not the disclosure identity; nothing was written or sent');
    return token.clientId;
  }

  /** The exact bytes, fixed once: withheld answers out, referenced resources in, opaque ids, the payer's route. */
  private async build(
    session: SessionRecord,
    form: FormSession,
    qr: FhirResource,
    payer: Payer,
    choices: Record<string, 'include' | 'withhold'>,
  ) {
    const ehr = this.smart.fhirClient(session, 'supplement', EHR_TIMEOUTS);
    const copy = withholdAnswers(qr, withheldItems(qr, choices));
    const resources = await readAll(ehr, answerReferences(copy));
    const [patient, coverage] = await Promise.all([
      readOne(ehr, `Patient/${form.patient}`),
      readOne(ehr, form.definition.coverage[0] ?? ''),
    ]);
    const id = crypto.randomUUID();
    const now = this.clock.now();
    const bundle = questionnaireResponseBundle({
      qr: copy,
      resources,
      igVersion: payer.igVersion,
      submissionId: id,
      now,
      fhirBase: session.fhirBase,
    });
    const extra = [patient, coverage].flatMap((r) => identifierValues(r));
    const { bundle: safe, map } = pseudonymizeIds(bundle, extra);
    const renamed = (ref: string | undefined) =>
      ref ? (Object.entries(map).find(([, was]) => was === ref)?.[0] ?? ref) : undefined;
    const request = routeRequest(payer.submissionRoute, {
      submissionId: id,
      qrBundle: safe,
      patient: renamed(`Patient/${form.patient}`)!,
      ...(form.definition.coverage[0] ? { coverage: renamed(form.definition.coverage[0])! } : {}),
      ...(form.definition.orders[0] ? { order: renamed(form.definition.orders[0])! } : {}),
      orderCodes: [],
      ...(payer.coverageIdentifiers[0] ? { payerIdentifier: payer.coverageIdentifiers[0] } : {}),
      ...(typeof coverage?.['subscriberId'] === 'string' ? { memberId: coverage['subscriberId'] } : {}),
      now,
    });
    const bytes = JSON.stringify(request.body);
    return {
      formId: form.id,
      payerId: payer.id,
      tenantId: session.tenantId,
      sessionIdHash: session.idHash,
      patientHash: this.audit.hash(`Patient/${form.patient}`),
      route: payer.submissionRoute,
      igVersion: payer.igVersion,
      questionnaireUrl: form.questionnaire.url,
      qrEhrId: form.ehr.id!,
      ...(form.ehr.versionId ? { qrVersionId: form.ehr.versionId } : {}),
      choices,
      body: bytes,
      sha256: sha256Hex(bytes),
      sha1: sha1Base64(bytes),
      idMap: map,
      path: request.path,
    };
  }

  private async writeBack(
    session: SessionRecord,
    form: FormSession,
    payer: Payer,
    submission: Submission,
    discloseClientId: string,
  ): Promise<SendOutcome> {
    const copy = new EhrCopy(
      this.smart.fhirClient(session, 'disclose', EHR_TIMEOUTS),
      this.smart.fhirClient(session, 'supplement', EHR_TIMEOUTS),
    );
    const result = await copy.write(submission, {
      patient: `Patient/${form.patient}`,
      ...(form.definition.author.practitioner ? { author: form.definition.author.practitioner } : {}),
      ...(form.definition.orders[0] ? { order: form.definition.orders[0] } : {}),
      payerName: payer.name,
      discloseClientId,
      now: this.clock.now(),
    });
    const audit = new DisclosureAudit(this.audit, session);
    if (result.kind === 'failed') {
      await this.submissions.writeBackFailed(submission.id, result.message);
      await audit.writeBackFailed(submission, result, discloseClientId);
      const failed = (await this.submissions.get(submission.id))!;
      return {
        kind: 'write-back-failed',
        status: result.status,
        message: `Not sent: ${result.message}.`,
        submission: submissionView(failed),
      };
    }
    await this.submissions.queue(submission.id, result, (tx) =>
      audit.verified(submission, result, discloseClientId, tx),
    );
    this.worker.wake();
    return { kind: 'queued', submission: submissionView((await this.submissions.get(submission.id))!) };
  }
}

/** A resource by `Type/id`, or `undefined` when it cannot be read (the review and the Bundle go without it). */
async function readOne(ehr: HttpFhirClient, reference: string): Promise<FhirResource | undefined> {
  const [type, id] = reference.split('/');
  if (!type || !id) return undefined;
  try {
    return await ehr.read(type, id);
  } catch {
    return undefined;
  }
}

async function readAll(ehr: HttpFhirClient, references: string[]): Promise<FhirResource[]> {
  const found = await Promise.all(references.map((ref) => readOne(ehr, ref)));
  return found.filter((r): r is FhirResource => Boolean(r));
}

function identifierValues(resource: FhirResource | undefined): string[] {
  if (!resource) return [];
  const ids = (resource['identifier'] as Array<{ value?: string }> | undefined) ?? [];
  return [
    ...ids.map((i) => i.value ?? ''),
    typeof resource['subscriberId'] === 'string' ? resource['subscriberId'] : '',
  ].filter(Boolean);
}
