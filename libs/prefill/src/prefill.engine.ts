import {
  type ElmLibrary,
  type FhirResource,
  parseCqlIdentifier,
  parseCqlReference,
  questionnaireReferences,
} from '@dtr/fhir';
import type { ItemShape } from './answers.js';
import { codeService, cql, expansionOf, type FhirModelVersion, patientFor, wrap } from './cql-runtime.js';
import { applyEnableWhen } from './enable-when.js';
import { launchContextNames } from './fhirpath-expressions.js';
import {
  type DataRequirements,
  dataRequirements,
  type PlannedSearch,
  indexLibraries,
  NON_COMPARTMENT_TYPES,
  planSearches,
  referencedNonCompartment,
  referencesTo,
  typesReadByReference,
} from './elm-requirements.js';
import { inlineCql, inlineElm } from './inline-expressions.js';
import { screenResource } from './input-validation.js';
import { populate } from './sdc-population.js';
import { CodeInUnsupportedError, PatientDataReader } from './patient-data-reader.js';
import { PreparedPackage } from './prepared-package.js';
import { PrefillSession } from './prefill-session.js';
import { INFORMATION_ORIGIN, type PrefillIssue, type PrefillRequest, type PrefillResult } from './prefill.types.js';

export * from './prefill.types.js';
import { answerSources } from './answer-sources.js';

const ORDER_PARAMETER: Record<string, string> = {
  DeviceRequest: 'device_request',
  ServiceRequest: 'service_request',
  MedicationRequest: 'medication_request',
  NutritionOrder: 'nutrition_order',
  CommunicationRequest: 'communication_request',
  Appointment: 'appointment',
  Encounter: 'encounter',
};

interface QItem extends ItemShape {
  linkId: string;
  text?: string;
  item?: QItem[];
  extension?: Array<{ url?: string; valueExpression?: { language?: string; expression?: string } }>;
}

/** Expression kinds whose CQL the engine evaluates (FHIRPath ones are evaluated at assembly). */
const EVALUATED = new Set([
  'initialExpression',
  'cqf-expression',
  'calculatedExpression',
  'candidateExpression',
  'contextExpression',
  'itemPopulationContext',
]);

function splitRef(reference: string | undefined): [string, string] | undefined {
  const match = reference ? /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(reference) : null;
  return match ? [match[1]!, match[2]!] : undefined;
}

async function mapBounded<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  });
  await Promise.all(workers);
  return results;
}

/**
 * The prefill engine: a questionnaire package and a patient's data in, a prefilled QuestionnaireResponse and a list
 * of issues out. Pure (no framework, no HTTP): data comes through the injected reader, which is asked only for what
 * the referenced defines can reach. One failing define never aborts the others.
 */
export class PrefillEngine {
  constructor(private readonly reader: PatientDataReader) {}

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
    const issues: PrefillIssue[] = [];
    const { pkg, questionnaire } = request;
    const now = request.now ?? new Date();
    const session = request.session;
    session?.bind(pkg, { ...request, now });

    // 1. What the questionnaire asks for: `"Lib".Define` per item.
    const refs = request.baseline
      ? questionnaireReferences(questionnaire)
      : PreparedPackage.referencesOf(questionnaire);
    const declared = refs.libraries.map((canonical) => ({ canonical, library: pkg.libraryByCanonical(canonical) }));
    for (const d of declared) {
      if (!d.library)
        issues.push({
          severity: 'error',
          code: 'missing-library',
          message: `cqf-library ${d.canonical} is not in the package`,
          library: d.canonical,
        });
    }
    const unknownLibraries = new Map<string, string[]>();
    // CQL per item and expression kind: `"Lib".Define` references, and inline expressions (ELM, CQL text) compiled
    // into libraries of their own. FHIRPath is evaluated at assembly (sdc-population).
    const cqlByKey = new Map<string, { library: string; define: string }>();
    const inline: Array<{ key: string; kind: string; linkId: string; language: string; expression: string }> = [];
    const requested: Array<{ library: string; define: string }> = [];
    for (const ref of refs.expressions) {
      if (!ref.linkId || !EVALUATED.has(ref.kind)) continue;
      const key = `${ref.kind}|${ref.linkId}`;
      if (cqlByKey.has(key) || inline.some((i) => i.key === key) || ref.language === 'text/fhirpath') continue;
      // text/cql-identifier names one define, possibly with spaces (`Gender Code`), quoted or not, or qualified.
      const parsed =
        ref.language === 'text/cql'
          ? parseCqlReference(ref.expression)
          : ref.language === 'text/cql-identifier'
            ? parseCqlIdentifier(ref.expression)
            : undefined;
      if (
        ref.language === 'application/elm+json' ||
        ref.language === 'text/cql-expression' ||
        (ref.language === 'text/cql' && !parsed)
      ) {
        inline.push({ key, kind: ref.kind, linkId: ref.linkId, language: ref.language, expression: ref.expression });
        continue;
      }
      if (ref.language !== 'text/cql' && ref.language !== 'text/cql-identifier') {
        issues.push({
          severity: 'information',
          code: 'expression-not-evaluated',
          message: `${ref.kind} in ${ref.language || 'no language'} is not evaluated; answer by hand`,
          linkId: ref.linkId,
        });
        continue;
      }
      if (!parsed) {
        issues.push({
          severity: 'information',
          code: 'expression-not-evaluated',
          message: `CQL identifier "${ref.expression.slice(0, 60)}" is not a define name`,
          linkId: ref.linkId,
        });
        continue;
      }
      const library = parsed.library
        ? pkg.libraryByIdentifier(parsed.library)
        : declared
            .map((d) => d.library)
            .find((l) => l?.elm?.library.statements?.def?.some((s) => s.name === parsed.define));
      const elm = library?.elm;
      if (!library && parsed.library) {
        // Reported once per library below, naming the items it leaves for the clinician.
        const items = unknownLibraries.get(parsed.library) ?? [];
        items.push(ref.linkId);
        unknownLibraries.set(parsed.library, items);
        continue;
      }
      if (!elm) {
        issues.push({
          severity: 'warning',
          code: library ? 'library-without-elm' : 'unknown-library',
          message: library
            ? `${parsed.library ?? 'the library'} ships no ELM; item left for the clinician`
            : `library ${parsed.library ?? '(unnamed)'} is not in the package`,
          linkId: ref.linkId,
          ...(parsed.library ? { library: parsed.library } : {}),
          define: parsed.define,
        });
        continue;
      }
      const id = elm.library.identifier.id;
      if (!elm.library.statements?.def?.some((s) => s.name === parsed.define)) {
        issues.push({
          severity: 'warning',
          code: 'unknown-define',
          message: `${id} does not define ${parsed.define}`,
          linkId: ref.linkId,
          library: id,
          define: parsed.define,
        });
        continue;
      }
      cqlByKey.set(key, { library: id, define: parsed.define });
      if (!requested.some((r) => r.library === id && r.define === parsed.define))
        requested.push({ library: id, define: parsed.define });
    }

    const cqlItems = refs.expressions.filter(
      (r) => r.linkId && EVALUATED.has(r.kind) && (r.language === 'text/cql' || r.language === 'text/cql-identifier'),
    );
    // Inline expressions: compiled (once per expression) into libraries evaluated with the package's.
    const inlineElms: ElmLibrary[] = [];
    for (const expression of inline) {
      try {
        const compiled =
          expression.language === 'application/elm+json'
            ? await inlineElm(expression.expression)
            : await inlineCql(
                expression.expression,
                declared.map((d) => d.library).filter((l): l is NonNullable<typeof l> => Boolean(l)),
                pkg.libraries,
              );
        const id = compiled.elm.library.identifier.id;
        if (!inlineElms.some((e) => e.library.identifier.id === id)) inlineElms.push(compiled.elm);
        cqlByKey.set(expression.key, { library: id, define: compiled.define });
        if (!requested.some((r) => r.library === id && r.define === compiled.define))
          requested.push({ library: id, define: compiled.define });
      } catch (error) {
        issues.push({
          severity: 'warning',
          code: 'expression-failed',
          message: `${expression.kind} (${expression.language}) could not be compiled: ${error instanceof Error ? error.message.slice(0, 200) : 'error'}`,
          linkId: expression.linkId,
        });
      }
    }
    if (declared.length === 0 && cqlItems.length > 0) {
      issues.push({
        severity: 'error',
        code: 'missing-cqf-library',
        message: `the questionnaire has CQL expressions on ${cqlItems.length} item(s) but names no library (cqf-library extension); those items are left for the clinician`,
      });
    }
    for (const [library, linkIds] of unknownLibraries) {
      issues.push({
        severity: 'error',
        code: 'missing-library',
        message: `library ${library} is not in the package; ${linkIds.length} item(s) left for the clinician: ${linkIds.slice(0, 8).join(', ')}${linkIds.length > 8 ? ', …' : ''}`,
        library,
      });
    }

    // Patient-independent work is done once per package (PreparedPackage); baseline mode redoes it on every run, as a
    // client that prepares nothing ahead would.
    const prepared = request.baseline ? undefined : PreparedPackage.of(pkg).with(inlineElms);
    const elms = prepared?.elms ?? [
      ...pkg.libraries.map((l) => l.elm).filter((e): e is ElmLibrary => Boolean(e)),
      ...inlineElms,
    ];
    const index = prepared?.index ?? indexLibraries(elms);
    if (request.baseline) {
      for (const d of declared) {
        const elm = d.library?.elm;
        for (const statement of elm?.library.statements?.def ?? []) {
          const id = elm!.library.identifier.id;
          if (
            (statement as { type?: string }).type !== 'FunctionDef' &&
            statement.name !== 'Patient' &&
            !requested.some((r) => r.library === id && r.define === statement.name)
          ) {
            requested.push({ library: id, define: statement.name });
          }
        }
      }
    }
    const expand = (url: string) => {
      if (request.baseline) return undefined;
      const vs = pkg.valueSetByUrl(url);
      return vs ? expansionOf(vs) : undefined;
    };
    const narrowed = prepared
      ? prepared.dataRequirements(requested, expand)
      : dataRequirements(index, requested, expand);
    // Baseline mode fetches every resource of each retrieved type: no code or reference narrowing.
    const requirements: DataRequirements = request.baseline
      ? { ...narrowed, retrieves: narrowed.retrieves.map((r) => ({ resourceType: r.resourceType })) }
      : narrowed;
    for (const url of request.baseline
      ? []
      : new Set(requirements.retrieves.map((r) => r.unresolvedValueSet).filter(Boolean))) {
      issues.push({
        severity: 'warning',
        code: 'valueset-not-expanded',
        message: `value set ${url} is not expanded in the package: its retrieve reads the whole type`,
      });
    }
    const resolved = performance.now();

    // 2. Minimum data: the patient, the context resources, the planned searches, referenced non-compartment resources.
    let searches = 0;
    let reads = 0;
    const resources = new Map<string, FhirResource>();
    let unnamed = 0;
    const note = (issue: PrefillIssue) => {
      if (!issues.some((i) => i.message === issue.message)) issues.push(issue);
    };
    const add = (r: FhirResource | undefined) => {
      if (!r) return;
      // A resource that does not fit the FHIR model is reported and left out (a Patient: its malformed elements).
      const { resource, issue } = screenResource(r);
      if (issue) note(issue);
      if (!resource) return;
      // Kept, never dropped silently: a resource without an id (allowed in a collection bundle) under a key of its
      // own; two different resources sharing an id both (the same one answered twice by two searches is kept once).
      let key = r.id ? `${r.resourceType}/${r.id}` : `${r.resourceType}#${++unnamed}`;
      if (!r.id)
        note({
          severity: 'information',
          code: 'resource-without-id',
          message: `${r.resourceType} resources without an id were used as they are`,
        });
      const existing = resources.get(key);
      if (existing && existing !== resource && JSON.stringify(existing) !== JSON.stringify(resource)) {
        note({
          severity: 'warning',
          code: 'duplicate-id',
          message: `different ${r.resourceType} resources share the id ${r.id}; each is used`,
        });
        key = `${key}#${++unnamed}`;
      }
      resources.set(key, resource);
    };
    const known = new Map((request.known ?? []).filter((r) => r.id).map((r) => [`${r.resourceType}/${r.id}`, r]));
    const read = async (reference: string | undefined) => {
      const parts = splitRef(reference);
      if (!parts) return undefined;
      const already = known.get(`${parts[0]}/${parts[1]}`);
      if (already) return already;
      const fetch = () => this.reader.read(parts[0], parts[1]);
      const shared = session?.read(parts[0], parts[1], fetch);
      if (!shared || shared.fresh) reads++;
      const outcome = shared
        ? await shared.promise
        : await fetch().then(
            (value) => ({ ok: true as const, value }),
            (error: unknown) => ({ ok: false as const, error }),
          );
      if (!outcome.ok) {
        const error = outcome.error;
        issues.push({
          severity: 'warning',
          code: 'read-failed',
          message: `${parts[0]}/${parts[1]}: ${error instanceof Error ? error.message : 'read failed'}`,
        });
        return undefined;
      }
      if (!outcome.value)
        issues.push({ severity: 'warning', code: 'not-found', message: `${parts[0]}/${parts[1]} could not be read` });
      return outcome.value;
    };
    const patient = await read(`Patient/${request.patientId}`);
    if (!patient) {
      issues.push({
        severity: 'error',
        code: 'no-patient',
        message: `Patient/${request.patientId} could not be read; nothing was prefilled`,
      });
    }
    add(patient);
    const contextResources = (await Promise.all([request.order, request.coverage, request.encounter].map(read))).filter(
      (r): r is FhirResource => Boolean(r),
    );
    contextResources.forEach(add);
    // Resources the libraries find by id from the context (the order's encounter, its coverage): read by reference.
    const byReference = typesReadByReference(requirements.retrieves);
    if (byReference.size > 0) {
      const wanted = referencesTo([...(patient ? [patient] : []), ...contextResources], byReference).filter(
        (ref) => !resources.has(ref),
      );
      for (const r of await Promise.all(wanted.map(read))) add(r);
    }
    const codeIn = request.codeIn === true && !request.baseline;
    const planned = patient
      ? prepared
        ? prepared.planSearches(requirements, request.patientId, codeIn)
        : planSearches(requirements.retrieves, request.patientId, 40, { codeIn })
      : [];
    let codeInRefused = false;
    // Results are kept per planned search and added in the plan's order once all have answered: the resources reach
    // the CQL engine in one order whatever order the searches finish in (list defines and First() depend on it).
    const answered: FhirResource[][] = planned.map(() => []);
    const runSearch = async (search: PlannedSearch, into: FhirResource[]): Promise<void> => {
      const fetch = () => this.reader.search(search.resourceType, search.params);
      const shared = session?.search(search.resourceType, search.params, fetch);
      if (!shared || shared.fresh) searches++;
      const outcome = shared
        ? await shared.promise
        : await fetch().then(
            (value) => ({ ok: true as const, value }),
            (error: unknown) => ({ ok: false as const, error }),
          );
      if (outcome.ok) into.push(...outcome.value);
      else if (search.fallback && outcome.error instanceof CodeInUnsupportedError) {
        // The EHR does not take `code:in`: the same codes, listed.
        if (!codeInRefused)
          issues.push({
            severity: 'information',
            code: 'code-in-unsupported',
            message: 'the EHR does not support code:in searches; value set codes were listed instead',
          });
        codeInRefused = true;
        for (const fallback of search.fallback) await runSearch(fallback, into);
      } else {
        const error = outcome.error;
        issues.push({
          severity: 'warning',
          code: 'search-failed',
          message: `${search.resourceType} search failed: ${error instanceof Error ? error.message : 'error'}`,
        });
      }
    };
    await mapBounded(
      planned.map((search, i) => ({ search, into: answered[i]! })),
      request.concurrency ?? 4,
      ({ search, into }) => runSearch(search, into),
    );
    for (const results of answered) for (const r of results) add(r);
    const wantedTypes = new Set(
      requirements.retrieves.map((r) => r.resourceType).filter((t) => NON_COMPARTMENT_TYPES.has(t)),
    );
    const referenced = referencedNonCompartment([...resources.values()]).filter((ref) =>
      wantedTypes.has(ref.split('/')[0]!),
    );
    if (request.user && wantedTypes.has(splitRef(request.user)?.[0] ?? '')) referenced.push(request.user);
    for (const r of await Promise.all([...new Set(referenced)].filter((ref) => !resources.has(ref)).map(read))) add(r);

    // FHIRPath environment (SDC launch context): %patient, %encounter, %order, %coverage, %user, %questionnaire.
    const expressionEnv: Record<string, unknown> = { ...(patient ? { patient } : {}), questionnaire };
    const fhirpathText = refs.expressions.filter((r) => r.language === 'text/fhirpath').map((r) => r.expression);
    if (fhirpathText.length > 0 && patient) {
      const byRef = (ref: string | undefined) =>
        ref ? resources.get(ref.replace(/^.*\/([A-Z][A-Za-z]+\/[^/]+)$/, '$1')) : undefined;
      const user =
        request.user && fhirpathText.some((t) => t.includes('%user'))
          ? (byRef(request.user) ?? (await read(request.user)))
          : undefined;
      Object.assign(expressionEnv, {
        ...(byRef(request.encounter) ? { encounter: byRef(request.encounter) } : {}),
        ...(byRef(request.order) ? { order: byRef(request.order) } : {}),
        ...(byRef(request.coverage) ? { coverage: byRef(request.coverage) } : {}),
        ...(user ? { user } : {}),
      });
      for (const name of launchContextNames(questionnaire)) {
        if (!(name in expressionEnv))
          issues.push({
            severity: 'information',
            code: 'launch-context-missing',
            message: `launchContext ${name} is not available`,
          });
      }
    }
    const fetched = performance.now();

    // 3. Evaluate only the requested defines, each isolated.
    const values = new Map<string, unknown>();
    let definesEvaluated = 0;
    if (patient && requested.length > 0) {
      const version: FhirModelVersion =
        elms
          .find((e) => e.library.identifier.id === requested[0]!.library)
          ?.library.usings?.def?.find((u) => u.localIdentifier === 'FHIR')?.version === '4.0.0'
          ? '4.0.0'
          : '4.0.1';
      const all = [...resources.values()];
      const cqlPatient = session ? session.patient(version, all) : patientFor(version, all);
      const repository = prepared
        ? undefined
        : new cql.Repository(Object.fromEntries(elms.map((e) => [e.library.identifier.id, e])));
      const codes = prepared ? prepared.codeService() : codeService(pkg.valueSets);
      const order = request.order
        ? resources.get(request.order.replace(/^.*\/([A-Z][A-Za-z]+\/[^/]+)$/, '$1'))
        : undefined;
      const coverage = request.coverage
        ? resources.get(request.coverage.replace(/^.*\/([A-Z][A-Za-z]+\/[^/]+)$/, '$1'))
        : undefined;
      const executionTime = cql.DateTime.fromJSDate(now, 0);
      for (const library of new Set(requested.map((r) => r.library))) {
        const elm = index.get(library)!;
        let compiled: ReturnType<PreparedPackage['library']>;
        try {
          compiled = prepared
            ? prepared.library(library, elm.library.identifier.version)
            : (repository!.resolve(library, elm.library.identifier.version) ?? undefined);
        } catch {
          compiled = undefined;
        }
        if (!compiled) {
          issues.push({
            severity: 'warning',
            code: 'library-unresolved',
            message: `${library} could not be loaded`,
            library,
          });
          continue;
        }
        const declaredParams = new Set((elm.library.parameters?.def ?? []).map((p) => p.name));
        const parameters: Record<string, unknown> = {};
        if (order) {
          const name = ORDER_PARAMETER[order.resourceType];
          if (name && declaredParams.has(name)) parameters[name] = wrap(version, order);
        }
        for (const name of ['Coverage', 'coverage'])
          if (coverage && declaredParams.has(name)) parameters[name] = wrap(version, coverage);
        // SDC launchContext names a library may declare as parameters.
        const encounter = request.encounter
          ? resources.get(request.encounter.replace(/^.*\/([A-Z][A-Za-z]+\/[^/]+)$/, '$1'))
          : undefined;
        for (const name of ['encounter', 'Encounter'])
          if (encounter && declaredParams.has(name)) parameters[name] = wrap(version, encounter);
        const make = () => new cql.PatientContext(compiled, cqlPatient, codes, parameters, executionTime);
        const context = session ? session.context(`${library}|${elm.library.identifier.version ?? ''}`, make) : make();
        for (const { define } of requested.filter((r) => r.library === library)) {
          const evaluate = (): Promise<unknown> => compiled.expressions[define]!.execute(context);
          const outcome = session
            ? await session.value(`${library}|${elm.library.identifier.version ?? ''}.${define}`, evaluate)
            : await evaluate().then(
                (value) => ({ ok: true as const, value, fresh: true }),
                (error: unknown) => ({ ok: false as const, error, fresh: true }),
              );
          if (outcome.fresh) definesEvaluated++;
          if (outcome.ok) values.set(`${library}.${define}`, outcome.value);
          else {
            const error = outcome.error;
            issues.push({
              severity: 'warning',
              code: 'define-failed',
              message: `${library}.${define} could not be evaluated: ${error instanceof Error ? error.message.slice(0, 200) : 'error'}`,
              library,
              define,
            });
          }
        }
      }
    }
    const evaluated = performance.now();

    // 4. The QuestionnaireResponse, every answer tagged with its origin.
    const source = request.igVersion === '2.2' ? 'auto-client' : 'auto';
    const origin = {
      url: INFORMATION_ORIGIN,
      extension: [
        { url: 'source', valueCode: source },
        ...(request.user
          ? [{ url: 'author', extension: [{ url: 'practitioner', valueReference: { reference: request.user } }] }]
          : []),
      ],
    };
    // Choice items bound to a value set (contained `#id` or a package canonical): its codes act as the options.
    const contained = (questionnaire['contained'] as FhirResource[] | undefined) ?? [];
    const optionsFor = (item: QItem & { answerValueSet?: string }): ItemShape => {
      if (item.answerOption || !item.answerValueSet) return item;
      const vs = item.answerValueSet.startsWith('#')
        ? contained.find((r) => r.resourceType === 'ValueSet' && r.id === item.answerValueSet!.slice(1))
        : pkg.valueSetByUrl(item.answerValueSet);
      const codes = vs ? expansionOf(vs) : undefined;
      if (!codes) return item;
      return {
        ...item,
        answerOption: codes.map((c) => ({ valueCoding: { ...(c.system ? { system: c.system } : {}), code: c.code } })),
      };
    };
    // SDC population: initial values, candidates, context, repeating-group contexts, calculated values to a steady
    // state; then the items that enableWhen / enableWhenExpression disable given these answers are left out.
    const population = patient
      ? populate({
          questionnaire,
          env: expressionEnv,
          cql: (kind, linkId) => {
            const target = cqlByKey.get(`${kind}|${linkId}`);
            const key = target ? `${target.library}.${target.define}` : undefined;
            return key && values.has(key) ? { value: values.get(key) } : undefined;
          },
          optionsFor,
          origin,
        })
      : { items: [], options: {}, answerContext: {}, env: expressionEnv, issues: [] };
    issues.push(...population.issues);
    const enablement = applyEnableWhen(questionnaire, population.items, population.env);
    if (enablement.cycle)
      issues.push({
        severity: 'warning',
        code: 'enablewhen-cycle',
        message: 'enableWhen conditions do not settle; check the questionnaire',
      });
    for (const failure of enablement.failures) {
      issues.push({
        severity: 'warning',
        code: 'expression-failed',
        message: `enableWhenExpression: ${failure.message}`,
        linkId: failure.linkId,
      });
    }
    const url = typeof questionnaire['url'] === 'string' ? questionnaire['url'] : `Questionnaire/${questionnaire.id}`;
    const version = typeof questionnaire['version'] === 'string' ? `|${questionnaire['version']}` : '';
    const contextUrl =
      request.igVersion === '2.2'
        ? 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context'
        : 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/context';
    const questionnaireResponse: FhirResource = {
      resourceType: 'QuestionnaireResponse',
      meta: {
        profile: ['http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-questionnaireresponse'],
      } as FhirResource['meta'],
      ...(request.order || request.coverage
        ? {
            extension: [request.order, request.coverage]
              .filter(Boolean)
              .map((reference) => ({ url: contextUrl, valueReference: { reference } })),
          }
        : {}),
      questionnaire: `${url}${version}`,
      status: 'in-progress',
      subject: { reference: `Patient/${request.patientId}` },
      authored: now.toISOString(),
      ...(request.user ? { author: { reference: request.user } } : {}),
      item: enablement.items,
    };
    const sources = answerSources(
      refs.expressions
        .filter((r) => r.linkId)
        .map((r) => {
          const define = cqlByKey.get(`${r.kind}|${r.linkId}`);
          return { linkId: r.linkId!, ...(define ? { define } : {}), fhirpath: r.language === 'text/fhirpath' };
        }),
      (define) =>
        new Set(
          (prepared
            ? prepared.dataRequirements([define], expand)
            : dataRequirements(index, [define], expand)
          ).retrieves.map((r) => r.resourceType),
        ),
      [...resources.values()],
      [patient, ...contextResources].filter((r): r is FhirResource => Boolean(r)),
    );
    const done = performance.now();
    return {
      questionnaireResponse,
      issues,
      options: population.options,
      answerContext: population.answerContext,
      sources,
      stats: {
        searches,
        reads,
        resourcesRead: resources.size,
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
}
