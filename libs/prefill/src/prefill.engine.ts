import type { FhirResource } from '@dtr/fhir';
import { answerSources } from './answer-sources.js';
import { type DataRequirements } from './elm-requirements.js';
import type { PatientDataReader } from './patient-data-reader.js';
import { assembleResponse } from './prefill-assemble.js';
import { type Bindings, bindQuestionnaire, declaredElms } from './prefill-binding.js';
import { evaluateDefines } from './prefill-evaluate.js';
import { PatientDataFetch } from './prefill-fetch.js';
import { PrefillSession } from './prefill-session.js';
import { MINIMAL, type PackageEvaluation, type PrefillStrategy } from './prefill-strategy.js';
import type { PrefillIssue, PrefillRequest, PrefillResult } from './prefill.types.js';

export * from './prefill.types.js';

/**
 * The prefill engine: a questionnaire package and a patient's data in, a prefilled QuestionnaireResponse and a list
 * of issues out. Pure (no framework, no HTTP): data comes through the injected reader, which is asked only for what
 * the referenced defines can reach. One failing define never aborts the others. Its steps: bind the expressions,
 * plan the data, fetch it, evaluate the defines, assemble the response.
 */
export class PrefillEngine {
  /** @param strategy how the prefill goes about it; the minimal one unless a benchmark compares another */
  constructor(
    private readonly reader: PatientDataReader,
    private readonly strategy: PrefillStrategy = MINIMAL,
  ) {}

  /**
   * Prefills several questionnaires of one package for one patient and launch, as a DTR session does for an order:
   * each read, search and define is done once for all of them (a PrefillSession), and each questionnaire still gets
   * its own response and issues, equal to what `run` gives it alone.
   */
  async runAll(
    request: Omit<PrefillRequest, 'questionnaire' | 'session'> & { questionnaires: FhirResource[] },
  ): Promise<PrefillResult[]> {
    const { questionnaires, ...common } = request;
    const session = new PrefillSession();
    const now = request.now ?? new Date();
    const results: PrefillResult[] = [];
    for (const questionnaire of questionnaires)
      results.push(await this.run({ ...common, now, questionnaire, session }));
    return results;
  }

  async run(request: PrefillRequest): Promise<PrefillResult> {
    const started = performance.now();
    const { pkg } = request;
    const now = request.now ?? new Date();
    request.session?.bind(pkg, { ...request, now });

    // 1. What the questionnaire asks for: `"Lib".Define` per item (inline expressions compiled).
    const bindings = await bindQuestionnaire(pkg, this.strategy.references(request.questionnaire));
    const issues = bindings.issues;
    // 2. The data the requested defines can reach.
    const prepared = this.strategy.prepare(pkg, bindings.inlineElms);
    const requested = this.strategy.defines(bindings.requested, declaredElms(bindings.declared));
    const expand = (url: string) => this.strategy.expand(pkg, url);
    const requirements = this.strategy.narrow(prepared.dataRequirements(requested, expand));
    if (this.strategy.narrowing) this.reportUnexpanded(requirements, issues);
    const resolved = performance.now();

    // 3. Minimum data: the patient, the context resources, the planned searches, referenced non-compartment ones.
    const data = new PatientDataFetch(this.reader, issues, request.session, request.known, request.patientId);
    const { patient, contextResources } = await data.context(request, requirements);
    const codeIn = request.codeIn === true && this.strategy.narrowing;
    if (patient)
      await data.search(prepared.planSearches(requirements, request.patientId, codeIn), request.concurrency ?? 4);
    await data.referenced(requirements, request.user);
    const fhirpath = bindings.refs.expressions.filter((r) => r.language === 'text/fhirpath').map((r) => r.expression);
    const env = await data.expressionEnv(request, patient, fhirpath);
    const fetched = performance.now();

    // 4. Only the requested defines, each isolated.
    const { values, evaluated: definesEvaluated } = patient
      ? await evaluateDefines({
          prepared,
          requested,
          resources: [...data.resources.values()],
          context: {
            ...optional('order', data.get(request.order)),
            ...optional('coverage', data.get(request.coverage)),
            ...optional('encounter', data.get(request.encounter)),
          },
          now,
          ...(request.session ? { session: request.session } : {}),
          issues,
        })
      : { values: new Map<string, unknown>(), evaluated: 0 };
    const evaluated = performance.now();

    // 5. The QuestionnaireResponse, every answer tagged with its origin; what each answer was drawn from.
    const assembled = assembleResponse({
      request: { ...request, now },
      pkg,
      patient,
      env,
      cql: (kind, linkId) => {
        const target = bindings.cqlByKey.get(`${kind}|${linkId}`);
        const key = target ? `${target.library}.${target.define}` : undefined;
        return key && values.has(key) ? { value: values.get(key) } : undefined;
      },
      issues,
    });
    const sources = this.sourcesOf(bindings, prepared, expand, data, [patient, ...contextResources]);
    this.reportInvalid(bindings, prepared, expand, data, [patient, ...contextResources], issues);
    const done = performance.now();
    return {
      ...assembled,
      issues,
      sources,
      stats: {
        searches: data.searches,
        reads: data.reads,
        resourcesRead: data.resources.size,
        definesEvaluated,
        ms: {
          resolve: resolved - started,
          fetch: fetched - resolved,
          evaluate: evaluated - fetched,
          assemble: done - evaluated,
          total: done - started,
        },
      },
    };
  }

  private reportUnexpanded(requirements: DataRequirements, issues: PrefillIssue[]): void {
    for (const url of new Set(requirements.retrieves.map((r) => r.unresolvedValueSet).filter(Boolean))) {
      issues.push({
        severity: 'warning',
        code: 'valueset-not-expanded',
        message: `value set ${url} is not expanded in the package: its retrieve reads the whole type`,
      });
    }
  }

  /**
   * Each resource that does not fit the FHIR model, with the items whose answers it may change: those whose define
   * retrieves its type, and the FHIRPath ones when it is a launch context resource (the patient, the order…).
   */
  private reportInvalid(
    bindings: Bindings,
    prepared: PackageEvaluation,
    expand: (url: string) => Array<{ system?: string; code: string }> | undefined,
    data: PatientDataFetch,
    context: Array<FhirResource | undefined>,
    issues: PrefillIssue[],
  ): void {
    const contextTypes = new Set(context.filter(Boolean).map((r) => r!.resourceType));
    for (const { resourceType, issue } of data.invalid) {
      const items = new Set<string>();
      for (const ref of bindings.refs.expressions) {
        if (!ref.linkId) continue;
        const define = bindings.cqlByKey.get(`${ref.kind}|${ref.linkId}`);
        const reads = define
          ? prepared.dataRequirements([define], expand).retrieves.some((r) => r.resourceType === resourceType)
          : ref.language === 'text/fhirpath' && contextTypes.has(resourceType);
        if (reads) items.add(ref.linkId);
      }
      const named = [...items];
      issues.push(
        named.length === 0
          ? issue
          : {
              ...issue,
              message: `${issue.message}; answers it may change: ${named.slice(0, 12).join(', ')}${named.length > 12 ? ', …' : ''}`,
              ...(named.length === 1 ? { linkId: named[0]! } : {}),
            },
      );
    }
  }

  private sourcesOf(
    bindings: Bindings,
    prepared: PackageEvaluation,
    expand: (url: string) => Array<{ system?: string; code: string }> | undefined,
    data: PatientDataFetch,
    context: Array<FhirResource | undefined>,
  ): PrefillResult['sources'] {
    return answerSources(
      bindings.refs.expressions
        .filter((r) => r.linkId)
        .map((r) => {
          const define = bindings.cqlByKey.get(`${r.kind}|${r.linkId}`);
          return { linkId: r.linkId!, ...(define ? { define } : {}), fhirpath: r.language === 'text/fhirpath' };
        }),
      (define) => new Set(prepared.dataRequirements([define], expand).retrieves.map((r) => r.resourceType)),
      [...data.resources.values()],
      context.filter((r): r is FhirResource => Boolean(r)),
    );
  }
}

function optional<K extends string>(key: K, value: FhirResource | undefined): { [P in K]?: FhirResource } {
  return (value ? { [key]: value } : {}) as { [P in K]?: FhirResource };
}
