import { Clock, DtrError } from '@dtr/kernel';
import { type FhirResource, HttpFhirClient } from '@dtr/fhir';
import { assertOutboundUrl, type BackendServicesClient, type OutboundPolicy } from '@dtr/smart';
import { type PackageResponse, parsePackageResponse } from './package/package-response.js';
import type { PackageIssue } from '@dtr/fhir';
import type { Payer } from './payer-registry.service.js';
import { mutualTlsFetch, type TlsCredentials } from './mutual-tls-fetch.js';

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
}

/**
 * Talks to one registered payer: SMART Backend Services token (ours, never the EHR's), then DTR operations on the
 * payer's own FHIR base only. Read-only operations are retried with backoff; failures are clear DtrErrors.
 * @see https://hl7.org/fhir/us/davinci-dtr/OperationDefinition-questionnaire-package.html
 */
export class PayerClient {
  private readonly fhir: HttpFhirClient;
  /** Makes a client on a base of this payer (its FHIR base, or an adaptive questionnaire's `$next-question` base). */
  private readonly clientOn: (baseUrl: string) => HttpFhirClient;

  constructor(
    readonly payer: Payer,
    private readonly tokens: BackendServicesClient,
    private readonly policy: OutboundPolicy,
    private readonly clock: Clock,
    options: { fetch?: typeof fetch; timeoutMs?: number; retries?: number; tls?: TlsCredentials } = {},
  ) {
    assertOutboundUrl(payer.fhirBase, policy, `payer ${payer.id} fhirBase`);
    // With a client certificate, every call to this payer (token endpoint and FHIR) presents it.
    const connection = options.tls ? mutualTlsFetch(options.tls) : options.fetch;
    this.clientOn = (baseUrl) =>
      new HttpFhirClient({
        baseUrl,
        accessToken: () =>
          this.tokens.token({
            tokenEndpoint: payer.tokenEndpoint,
            clientId: payer.clientId,
            signingAlg: payer.signingAlg,
            scopes: payer.scopes,
            ...(options.tls ? { fetch: connection } : {}),
          }),
        ...(connection ? { fetch: connection } : {}),
        timeoutMs: options.timeoutMs ?? 20_000,
        retries: options.retries ?? 2,
      });
    this.fhir = this.clientOn(payer.fhirBase);
  }

  /** Builds the input Parameters in the shape of the payer's DTR version. */
  packageParameters(request: PackageRequest): FhirResource {
    if (request.coverages.length === 0)
      throw new DtrError('INVALID_INPUT', 'a coverage is required to ask for a questionnaire package');
    const coverages = this.payer.igVersion === '2.2' ? request.coverages.slice(0, 1) : request.coverages;
    return {
      resourceType: 'Parameters',
      parameter: [
        ...coverages.map((resource) => ({ name: 'coverage', resource })),
        ...request.orders.map((resource) => ({ name: 'order', resource })),
        ...(request.questionnaires ?? []).map((valueCanonical) => ({ name: 'questionnaire', valueCanonical })),
        ...(request.context ? [{ name: 'context', valueString: request.context }] : []),
        ...(request.changedSince ? [{ name: 'changedsince', valueDateTime: request.changedSince.toISOString() }] : []),
      ],
    };
  }

  async questionnairePackage(request: PackageRequest): Promise<PackageResponse & { retrievedAt: Date }> {
    const body = await this.fhir.operation('Questionnaire/$questionnaire-package', this.packageParameters(request), {
      idempotent: true,
    });
    return { ...parsePackageResponse(body), retrievedAt: this.clock.now() };
  }

  /**
   * A value set the package uses but does not carry expanded, expanded by the payer (`ValueSet/$expand` at this
   * payer's registered base only). Answers without an expansion are refused.
   * @see https://hl7.org/fhir/R4/valueset-operation-expand.html
   */
  async expandValueSet(url: string): Promise<FhirResource> {
    const body = await this.fhir.operation<FhirResource>(
      'ValueSet/$expand',
      { resourceType: 'Parameters', parameter: [{ name: 'url', valueUri: url }] },
      { idempotent: true },
    );
    const expansion = (body as { expansion?: { contains?: unknown } } | undefined)?.expansion;
    if (
      body?.resourceType !== 'ValueSet' ||
      !expansion ||
      (expansion.contains !== undefined && !Array.isArray(expansion.contains))
    ) {
      throw new DtrError('UPSTREAM_ERROR', `the payer's $expand of ${url} did not answer a ValueSet with an expansion`);
    }
    return body;
  }

  /**
   * Reports package problems to the payer. Only content facts travel (codes, library and define names, item
   * linkIds): never patient data.
   */
  async logQuestionnaireErrors(questionnaire: string, issues: PackageIssue[]): Promise<void> {
    const outcome = {
      resourceType: 'OperationOutcome',
      issue: issues.map((i) => ({
        severity: i.severity,
        code: 'processing',
        details: { coding: [{ system: 'urn:dtr-backend:package-issue', code: i.code }], text: i.message },
        expression: [i.linkId ? `Questionnaire.item.where(linkId='${i.linkId}')` : 'Questionnaire'],
      })),
    };
    await this.fhir.operation('$log-questionnaire-errors', {
      resourceType: 'Parameters',
      parameter: [
        { name: 'questionnaire', valueCanonical: questionnaire },
        { name: 'outcome', resource: outcome },
      ],
    });
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
