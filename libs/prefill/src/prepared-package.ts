import { type ElmLibrary, type FhirResource, type QuestionnairePackage, questionnaireReferences } from '@dtr/fhir';
import { codeService, cql } from './cql-runtime.js';
import {
  type DataRequirements,
  dataRequirements,
  type ElmIndex,
  indexLibraries,
  type PlannedSearch,
  planSearches,
} from './elm-requirements.js';

type CompiledLibrary = NonNullable<ReturnType<InstanceType<typeof cql.Repository>['resolve']>>;

/**
 * What a package needs before any patient is seen, built once per package and kept while the package object lives:
 * the ELM index, the compiled cql-execution libraries (compiling a library also compiles its includes, FHIRHelpers
 * among them, which was the largest fixed cost of a prefill), the code service over the package's value sets, and the
 * data requirements of each set of requested defines. None of it depends on the patient, and cql-execution keeps all
 * evaluation state in the context, so sharing the compiled libraries between prefills is safe (answers are compared
 * with uncached runs in the tests).
 */
/**
 * Codes listed per search when a value set is searched without `code:in`: a long list goes as a POST to `_search`
 * (HttpFhirClient), so a large value set is a few searches, not hundreds.
 */
const CODES_PER_SEARCH = 500;

export class PreparedPackage {
  readonly elms: ElmLibrary[];
  readonly index: ElmIndex;
  private readonly repository: InstanceType<typeof cql.Repository>;
  private readonly compiled = new Map<string, CompiledLibrary | null>();
  private codes: ReturnType<typeof codeService> | undefined;
  private readonly requirements = new Map<string, DataRequirements>();

  private readonly extended = new Map<string, PreparedPackage>();

  private readonly extraIds = new Set<string>();

  private constructor(
    private readonly pkg: QuestionnairePackage,
    extra: ElmLibrary[] = [],
    /** For an extension: the package's own libraries are taken from here, compiled once. */
    private readonly base?: PreparedPackage,
  ) {
    for (const e of extra) this.extraIds.add(e.library.identifier.id);
    this.elms = [...pkg.libraries.map((l) => l.elm).filter((e): e is ElmLibrary => Boolean(e)), ...extra];
    this.index = indexLibraries(this.elms);
    this.repository = new cql.Repository(Object.fromEntries(this.elms.map((e) => [e.library.identifier.id, e])));
  }

  private static readonly cache = new WeakMap<QuestionnairePackage, PreparedPackage>();
  private static readonly references = new WeakMap<FhirResource, ReturnType<typeof questionnaireReferences>>();
  private readonly plans = new WeakMap<DataRequirements, PlannedSearch[]>();
  private readonly plansCodeIn = new WeakMap<DataRequirements, PlannedSearch[]>();

  /** The expressions and libraries a questionnaire names, read once per questionnaire object. */
  static referencesOf(questionnaire: FhirResource): ReturnType<typeof questionnaireReferences> {
    let found = PreparedPackage.references.get(questionnaire);
    if (!found) PreparedPackage.references.set(questionnaire, (found = questionnaireReferences(questionnaire)));
    return found;
  }

  /** The searches for these requirements, planned once; only the patient differs between prefills. */
  planSearches(requirements: DataRequirements, patientId: string, codeIn = false): PlannedSearch[] {
    const plans = codeIn ? this.plansCodeIn : this.plans;
    let plan = plans.get(requirements);
    if (!plan)
      plans.set(
        requirements,
        (plan = planSearches(requirements.retrieves, '\u0000patient', CODES_PER_SEARCH, { codeIn })),
      );
    const forPatient = (search: PlannedSearch): PlannedSearch => ({
      resourceType: search.resourceType,
      params: { ...search.params, patient: patientId },
      ...(search.fallback ? { fallback: search.fallback.map(forPatient) } : {}),
    });
    return plan.map(forPatient);
  }

  static of(pkg: QuestionnairePackage): PreparedPackage {
    let prepared = PreparedPackage.cache.get(pkg);
    if (!prepared) PreparedPackage.cache.set(pkg, (prepared = new PreparedPackage(pkg)));
    return prepared;
  }

  /**
   * This package with the inline expression libraries of a questionnaire added (see inline-expressions), prepared
   * once per set of them.
   */
  with(extra: ElmLibrary[]): PreparedPackage {
    if (extra.length === 0) return this;
    const key = extra
      .map((e) => `${e.library.identifier.id}|${e.library.identifier.version ?? ''}`)
      .sort()
      .join(',');
    let found = this.extended.get(key);
    if (!found) {
      found = new PreparedPackage(this.pkg, extra, this);
      found.codes = this.codeService();
      this.extended.set(key, found);
    }
    return found;
  }

  /** The compiled library, or undefined when it cannot be loaded (an include missing, ELM the engine refuses). */
  library(id: string, version: string | undefined): CompiledLibrary | undefined {
    if (this.base && !this.extraIds.has(id)) return this.base.library(id, version);
    const key = `${id}|${version ?? ''}`;
    if (!this.compiled.has(key)) {
      let library: CompiledLibrary | null;
      try {
        library = this.repository.resolve(id, version) ?? null;
      } catch {
        library = null;
      }
      this.compiled.set(key, library);
    }
    return this.compiled.get(key) ?? undefined;
  }

  codeService(): ReturnType<typeof codeService> {
    return (this.codes ??= codeService(this.pkg.valueSets as FhirResource[]));
  }

  dataRequirements(
    requested: Array<{ library: string; define: string }>,
    expand: (valueSetUrl: string) => Array<{ system?: string; code: string }> | undefined,
  ): DataRequirements {
    const key = requested.map((r) => `${r.library}.${r.define}`).join('\u0000');
    let found = this.requirements.get(key);
    if (!found) this.requirements.set(key, (found = dataRequirements(this.index, requested, expand)));
    return found;
  }
}
