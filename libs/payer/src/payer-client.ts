import { Clock, DtrError } from '@dtr/kernel';
import { compartmentOf, type DtrVersion, type FhirResource, HttpFhirClient } from '@dtr/fhir';
import {
  assertOutboundUrl,
  type BackendServicesClient,
  limitsOf,
  type OutboundLimits,
  type OutboundPolicy,
  outboundFetch,
} from '@dtr/smart';
import { type PackageResponse, parsePackageResponse } from './package/package-response.js';
import type { PackageIssue } from '@dtr/fhir';
import { backendServicesRegistration, type Payer } from './payer-registry.service.js';
import { mutualTlsFetch, type TlsCredentials } from './mutual-tls-fetch.js';
import { logErrorsRequest } from './log-questionnaire-errors.js';

/**
 * The `value[x]` of `changedsince` in each version's DTRQuestionnairePackageInputParameters profile: `only instant`
 * in 2.0.1, 2.1 and 2.2 alike (the 2.0.1 and 2.1 OperationDefinitions say `dateTime`, but the Parameters instance
 * must conform to the input profile, which narrows it to `instant`). An ISO instant with `Z` fits both.
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2/StructureDefinition-dtr-qpackage-input-parameters.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/StructureDefinition-dtr-qpackage-input-parameters.html
 * @see https://hl7.org/fhir/us/davinci-dtr/2.2.0/en/StructureDefinition-dtr-qpackage-input-parameters.html
 */
const CHANGEDSINCE_TYPE: Record<DtrVersion, 'valueInstant' | 'valueDateTime'> = {
  '2.0.1': 'valueInstant',
  '2.1': 'valueInstant',
  '2.2': 'valueInstant',
};

export interface PackageRequest {
  /** The coverage in context; DTR 2.2 takes exactly one, older versions all of them. */
  coverages: FhirResource[];
  orders: FhirResource[];
  /** Questionnaire canonicals already known (from CRD or the launch). */
  questionnaires?: string[];
  /** CRD coverage-assertion id or PAS TRN. */
  context?: string;
  /** On resume: only what changed since. */
  changedSince?: Date;
  /**
   * The session's patient: every order's subject and every coverage's beneficiary must name them, else nothing is
   * sent to the payer.
   */
  patient?: string;
  /** Who the remembered questionnaire choice belongs to (a keyed hash of tenant and patient); never sent. */
  selectionScope?: string;
}

/** Codes asked for per `$expand` page. */
const EXPAND_PAGE = 1000;

/**
 * Talks to one registered payer: SMART Backend Services token (ours, never the EHR's), then DTR operations on the
 * payer's own FHIR base only. Read-only operations are retried with backoff; failures are clear DtrErrors.
 * @see https://hl7.org/fhir/us/davinci-dtr/OperationDefinition-questionnaire-package.html
 */
export class PayerClient {
  private readonly fhir: HttpFhirClient;
  private readonly limits: OutboundLimits;
  /** Makes a client on a base of this payer (its FHIR base, or an adaptive questionnaire's `$next-question` base). */
  private readonly clientOn: (baseUrl: string) => HttpFhirClient;

  constructor(
    readonly payer: Payer,
    private readonly tokens: BackendServicesClient,
    private readonly policy: OutboundPolicy,
    private readonly clock: Clock,
    options: {
      fetch?: typeof fetch;
      timeoutMs?: number;
      retries?: number;
      tls?: TlsCredentials;
      /** For a payer registered with `tokenSource: launch`: the token to send instead of our Backend Services one. */
      launchToken?: () => Promise<string>;
    } = {},
  ) {
    assertOutboundUrl(payer.fhirBase, policy, `payer ${payer.id} fhirBase`);
    // With a client certificate, every call to this payer (token endpoint and FHIR) presents it.
    const connection = options.tls ? mutualTlsFetch(options.tls, policy) : (options.fetch ?? outboundFetch(policy));
    const limits = limitsOf(policy);
    this.limits = limits;
    this.clientOn = (baseUrl) =>
      new HttpFhirClient({
        baseUrl,
        accessToken: () =>
          options.launchToken?.() ??
          this.tokens.token(backendServicesRegistration(payer, options.tls ? connection : undefined)),
        fetch: connection,
        maxResponseBytes: limits.payer.maxBytes,
        maxJsonDepth: limits.payer.maxDepth,
        timeoutMs: options.timeoutMs ?? 20_000,
        retries: options.retries ?? 2,
      });
    this.fhir = this.clientOn(payer.fhirBase);
  }

  /** Builds the input Parameters in the shape of the payer's DTR version. */
  packageParameters(request: PackageRequest): FhirResource {
    if (request.coverages.length === 0)
      throw new DtrError('INVALID_INPUT', 'a coverage is required to ask for a questionnaire package');
    if (request.patient !== undefined) {
      const patient = request.patient;
      for (const resource of [...request.orders, ...request.coverages]) {
        if (compartmentOf(resource, patient) !== 'patient')
          throw new DtrError(
            'CONFLICT',
            `the ${resource.resourceType === 'Coverage' ? "coverage's beneficiary" : `${resource.resourceType}'s subject`} is not the patient of this session: nothing was sent to the payer`,
          );
      }
    }
    const coverages = this.payer.igVersion === '2.2' ? request.coverages.slice(0, 1) : request.coverages;
    return {
      resourceType: 'Parameters',
      parameter: [
        ...coverages.map((resource) => ({ name: 'coverage', resource })),
        ...request.orders.map((resource) => ({ name: 'order', resource })),
        ...(request.questionnaires ?? []).map((valueCanonical) => ({ name: 'questionnaire', valueCanonical })),
        ...(request.context ? [{ name: 'context', valueString: request.context }] : []),
        ...(request.changedSince
          ? [{ name: 'changedsince', [CHANGEDSINCE_TYPE[this.payer.igVersion]]: request.changedSince.toISOString() }]
          : []),
      ],
    };
  }

  async questionnairePackage(request: PackageRequest): Promise<PackageResponse & { retrievedAt: Date }> {
    const body = await this.fhir.operation('Questionnaire/$questionnaire-package', this.packageParameters(request), {
      idempotent: true,
    });
    return { ...parsePackageResponse(body, this.limits.packageMaxResources), retrievedAt: this.clock.now() };
  }

  /**
   * A value set the package uses but does not carry expanded, expanded by the payer (`ValueSet/$expand` at this
   * payer's registered base only). Answers without an expansion are refused.
   * @see https://hl7.org/fhir/R4/valueset-operation-expand.html
   */
  async expandValueSet(url: string): Promise<FhirResource> {
    const { expandMaxPages, expandMaxCodes } = this.limits;
    let first: FhirResource | undefined;
    const contains: unknown[] = [];
    // Paged with `offset`/`count` when the payer pages (`expansion.total` above what came back), within the limits.
    for (let page = 0; ; page++) {
      const body = await this.fhir.operation<FhirResource>(
        'ValueSet/$expand',
        {
          resourceType: 'Parameters',
          parameter: [
            { name: 'url', valueUri: url },
            ...(page > 0 ? [{ name: 'offset', valueInteger: contains.length }] : []),
            { name: 'count', valueInteger: Math.min(EXPAND_PAGE, expandMaxCodes) },
          ],
        },
        { idempotent: true },
      );
      const expansion = (body as { expansion?: { contains?: unknown; total?: unknown } } | undefined)?.expansion;
      if (
        body?.resourceType !== 'ValueSet' ||
        !expansion ||
        (expansion.contains !== undefined && !Array.isArray(expansion.contains))
      ) {
        throw new DtrError(
          'UPSTREAM_ERROR',
          `the payer's $expand of ${url} did not answer a ValueSet with an expansion`,
        );
      }
      first ??= body;
      const got = (expansion.contains as unknown[] | undefined) ?? [];
      contains.push(...got);
      const total = typeof expansion.total === 'number' ? expansion.total : undefined;
      if (contains.length > expandMaxCodes || (total ?? 0) > expandMaxCodes)
        throw new DtrError(
          'UPSTREAM_ERROR',
          `the expansion of ${url} has ${Math.max(total ?? 0, contains.length)} codes, more than the ${expandMaxCodes} accepted`,
          { details: { maxCodes: expandMaxCodes } },
        );
      if (total === undefined || got.length === 0 || contains.length >= total) break;
      if (page + 1 >= expandMaxPages)
        throw new DtrError(
          'UPSTREAM_ERROR',
          `the expansion of ${url} needs more than the ${expandMaxPages} $expand pages accepted`,
          { details: { maxPages: expandMaxPages } },
        );
    }
    const expansion = first['expansion'] as Record<string, unknown>;
    if (contains.length === ((expansion['contains'] as unknown[] | undefined) ?? []).length) return first;
    return { ...first, expansion: { ...expansion, offset: 0, contains } };
  }

  /**
   * Reports problems with a questionnaire (its package, or its logic failing during prefill) to the payer with
   * `$log-questionnaire-errors` in the payer's DTR version shape. Only content facts travel (codes, library and
   * define names, item linkIds), our software identity and the time: never patient data (see RUNTIME_REPORTED).
   */
  async logQuestionnaireErrors(questionnaire: string, issues: PackageIssue[], endpoint?: string): Promise<void> {
    const { path, body } = logErrorsRequest(this.payer.igVersion, questionnaire, issues, this.clock.now(), endpoint);
    await this.fhir.operation(path, body);
  }

  /**
   * The base on which an adaptive questionnaire's `$next-question` is called: the `questionnaireAdaptive` extension's
   * url (DTR: a sub-url of the payer's base, reached with the same Backend Services token), else the payer's base.
   * A url elsewhere, or one the outbound policy refuses, is refused: our token never goes to another host.
   * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#adaptive-form-considerations (spec-24)
   */
  nextQuestionBase(adaptiveUrl: string | undefined): string {
    const base = this.payer.fhirBase.replace(/\/+$/, '');
    if (!adaptiveUrl) return base;
    const url = adaptiveUrl.replace(/\/+$/, '').replace(/\/(Questionnaire\/)?\$next-question$/, '');
    if (url !== base && !url.startsWith(`${base}/`))
      throw new DtrError(
        'UPSTREAM_ERROR',
        `the adaptive questionnaire names a $next-question endpoint outside the payer's registered base (${base})`,
      );
    assertOutboundUrl(url, this.policy, `payer ${this.payer.id} $next-question`);
    return url;
  }

  /**
   * Adaptive forms: sends the response so far and gets it back with the next question(s) in its contained
   * Questionnaire (status `completed` when done). Shapes per the payer's DTR version: 2.2 Parameters with a
   * `questionnaire-response` part in and `return` out; 2.1 Parameters with `in` and `out`; 2.0.1 (SDC STU3) the bare
   * QuestionnaireResponse both ways. Any of these answers is read, whatever the version.
   * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/OperationDefinition-DTR-Questionnaire-next-question.html
   * @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/StructureDefinition-dtr-next-question-input-parameters.html
   * @see https://hl7.org/fhir/uv/sdc/STU3/OperationDefinition-Questionnaire-next-question.html
   */
  async nextQuestion(questionnaireResponse: FhirResource, adaptiveUrl?: string): Promise<FhirResource> {
    if (questionnaireResponse.resourceType !== 'QuestionnaireResponse')
      throw new DtrError('INVALID_INPUT', 'next-question takes a QuestionnaireResponse');
    const version = this.payer.igVersion;
    const body =
      version === '2.0.1'
        ? questionnaireResponse
        : {
            resourceType: 'Parameters',
            parameter: [{ name: NEXT_QUESTION_IN[version], resource: questionnaireResponse }],
          };
    const base = this.nextQuestionBase(adaptiveUrl);
    const client = base === this.payer.fhirBase.replace(/\/+$/, '') ? this.fhir : this.clientOn(base);
    const answer = await client.operation<FhirResource | undefined>('Questionnaire/$next-question', body);
    const parts = (answer?.resourceType === 'Parameters' ? (answer['parameter'] as unknown) : undefined) ?? [];
    const named = Array.isArray(parts) ? (parts as Array<{ name?: string; resource?: FhirResource }>) : [];
    const qr =
      answer?.resourceType === 'Parameters'
        ? (
            named.find((p) => p.name === NEXT_QUESTION_OUT[version] && p.resource) ??
            named.find((p) => p.resource?.resourceType === 'QuestionnaireResponse')
          )?.resource
        : answer;
    if (!qr || qr.resourceType !== 'QuestionnaireResponse')
      throw new DtrError('UPSTREAM_ERROR', 'the payer did not answer $next-question with a QuestionnaireResponse');
    return qr;
  }
}

/** The name of the `$next-question` input and output parts per DTR version (2.0.1 sends the bare resource). */
const NEXT_QUESTION_IN = { '2.2': 'questionnaire-response', '2.1': 'in' } as const;
const NEXT_QUESTION_OUT = { '2.2': 'return', '2.1': 'out', '2.0.1': 'return' } as const;
