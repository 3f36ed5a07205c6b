import {
  compartmentOf,
  type FhirResource,
  hasPatientSearch,
  parseResourceReference,
  relativeReference,
} from '@dtr/fhir';
import {
  type DataRequirements,
  NON_COMPARTMENT_TYPES,
  type PlannedSearch,
  referencedNonCompartment,
  referencesTo,
  typesReadByReference,
} from './elm-requirements.js';
import { launchContextNames } from './fhirpath-expressions.js';
import { screenResource } from './input-validation.js';
import { CodeInUnsupportedError, type PatientDataReader } from './patient-data-reader.js';
import type { PrefillSession } from './prefill-session.js';
import type { PrefillIssue, PrefillRequest } from './prefill.types.js';

/** `Type/id` of a literal reference (relative, absolute or versioned), or undefined. */
function relative(reference: string | undefined): string | undefined {
  const parsed = parseResourceReference(reference);
  return parsed ? relativeReference(parsed) : undefined;
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
 * Minimum data for one prefill: the patient, the context resources, the planned searches (results kept in plan order
 * whatever order they answer in), the non-compartment resources the results reference. Every resource is screened;
 * none is dropped silently. Shared reads and searches go through the session when there is one.
 */
export class PatientDataFetch {
  readonly resources = new Map<string, FhirResource>();
  /** Resources that do not fit the FHIR model, with their issue (reported by the engine, naming the items). */
  readonly invalid: Array<{ resourceType: string; issue: PrefillIssue }> = [];
  searches = 0;
  reads = 0;
  private unnamed = 0;
  /** Keys of resources read by reference (the launch context) and not yet returned by a search. */
  private readonly readOnly = new Set<string>();
  private codeInRefused = false;
  private readonly known: Map<string, FhirResource>;

  constructor(
    private readonly reader: PatientDataReader,
    private readonly issues: PrefillIssue[],
    private readonly session: PrefillSession | undefined,
    known: FhirResource[] = [],
    private readonly patientId?: string,
  ) {
    this.known = new Map(known.filter((r) => r.id).map((r) => [`${r.resourceType}/${r.id}`, r]));
  }

  /** Reports an issue once (the same message from several searches is one issue). */
  private note(issue: PrefillIssue): void {
    if (!this.issues.some((i) => i.message === issue.message)) this.issues.push(issue);
  }

  /**
   * Kept, never dropped silently: a resource that does not fit the FHIR model is reported (and left out, or its bad
   * elements); one without an id (allowed in a collection bundle) under a key of its own; two different resources
   * sharing an id both (the same one answered twice by two searches is kept once).
   */
  add(r: FhirResource | undefined, searched = false): void {
    if (!r || !this.ofThePatient(r)) return;
    const { resource, issue } = screenResource(r);
    if (issue && !this.invalid.some((i) => i.issue.message === issue.message))
      this.invalid.push({ resourceType: r.resourceType, issue });
    if (!resource) return;
    let key = r.id ? `${r.resourceType}/${r.id}` : `${r.resourceType}#${++this.unnamed}`;
    if (!r.id)
      this.note({
        severity: 'information',
        code: 'resource-without-id',
        message: `${r.resourceType} resources without an id were used as they are`,
      });
    const existing = this.resources.get(key);
    if (existing && existing !== resource && JSON.stringify(existing) !== JSON.stringify(resource)) {
      this.note({
        severity: 'warning',
        code: 'duplicate-id',
        message: `different ${r.resourceType} resources share the id ${r.id}; each is used`,
      });
      key = `${key}#${++this.unnamed}`;
    } else if (existing && searched && this.readOnly.delete(key)) {
      // A context resource read first takes the place its type's search gives it: a type's resources are then in
      // the order the search returns them, as evaluation over the whole record has them.
      this.resources.delete(key);
    }
    if (!searched && !existing) this.readOnly.add(key);
    this.resources.set(key, resource);
  }

  /**
   * Whether a resource may be used for this patient: it is in the patient's compartment (its patient reference, per
   * type, names them) or a type reached by reference (Practitioner, Organization, Medication…). Others are left out
   * with an issue naming the type only (never an id or content: it is another patient's data).
   */
  private ofThePatient(r: FhirResource): boolean {
    if (this.patientId === undefined) return true;
    const where = compartmentOf(r, this.patientId);
    if (where === 'patient' || where === 'referenced') return true;
    this.note({
      severity: 'warning',
      code: where === 'foreign' ? 'not-patient-compartment' : 'not-patient-data',
      message:
        where === 'foreign'
          ? `the EHR returned a ${r.resourceType} resource that does not belong to this patient; it was left out`
          : `the EHR returned a ${r.resourceType} resource, a type outside the patient compartment; it was left out`,
    });
    return false;
  }

  /** A resource by reference: already known, shared through the session, or read. */
  async read(reference: string | undefined): Promise<FhirResource | undefined> {
    const parsed = parseResourceReference(reference);
    if (!parsed) return undefined;
    const { type, id } = parsed;
    const already = this.known.get(`${type}/${id}`);
    if (already) return already;
    const fetch = () => this.reader.read(type, id);
    const shared = this.session?.read(type, id, fetch);
    if (!shared || shared.fresh) this.reads++;
    const outcome = shared
      ? await shared.promise
      : await fetch().then(
          (value) => ({ ok: true as const, value }),
          (error: unknown) => ({ ok: false as const, error }),
        );
    if (!outcome.ok) {
      const error = outcome.error;
      this.issues.push({
        severity: 'warning',
        code: 'read-failed',
        message: `${type}/${id}: ${error instanceof Error ? error.message : 'read failed'}`,
      });
      return undefined;
    }
    if (!outcome.value)
      this.issues.push({ severity: 'warning', code: 'not-found', message: `${type}/${id} could not be read` });
    return outcome.value;
  }

  /** The stored resource a context reference names. */
  get(reference: string | undefined): FhirResource | undefined {
    const key = relative(reference);
    return key ? this.resources.get(key) : undefined;
  }

  /** The patient and the launch context (order, coverage, encounter), then what the libraries read by reference. */
  async context(
    request: PrefillRequest,
    requirements: DataRequirements,
  ): Promise<{ patient?: FhirResource; contextResources: FhirResource[] }> {
    const patient = await this.read(`Patient/${request.patientId}`);
    if (!patient) {
      this.issues.push({
        severity: 'error',
        code: 'no-patient',
        message: `Patient/${request.patientId} could not be read; nothing was prefilled`,
      });
    }
    this.add(patient);
    const contextResources = (
      await Promise.all([request.order, request.coverage, request.encounter].map((r) => this.read(r)))
    ).filter((r): r is FhirResource => Boolean(r));
    contextResources.forEach((r) => this.add(r));
    // Resources the libraries find by id from the context (the order's encounter, its coverage): read by reference.
    const byReference = typesReadByReference(requirements.retrieves);
    if (byReference.size > 0) {
      const wanted = referencesTo([...(patient ? [patient] : []), ...contextResources], byReference).filter(
        (ref) => !this.resources.has(ref),
      );
      for (const r of await Promise.all(wanted.map((ref) => this.read(ref)))) this.add(r);
    }
    return { ...(patient ? { patient } : {}), contextResources };
  }

  /**
   * The planned searches, at most `concurrency` at once; results are added in the plan's order once all have
   * answered, so the resources reach the CQL engine in one order whatever order the searches finish in.
   */
  async search(all: PlannedSearch[], concurrency: number): Promise<void> {
    // Only types with a `patient` search parameter are searched by patient (another type would be searched unfiltered).
    const planned = all.filter((s) => s.params['patient'] === undefined || hasPatientSearch(s.resourceType));
    for (const type of new Set(all.filter((s) => !planned.includes(s)).map((s) => s.resourceType)))
      this.note({
        severity: 'warning',
        code: 'not-searchable-by-patient',
        message: `${type} has no patient search parameter: it was not searched, and defines that use it see none`,
      });
    const answered: FhirResource[][] = planned.map(() => []);
    await mapBounded(
      planned.map((search, i) => ({ search, into: answered[i]! })),
      concurrency,
      ({ search, into }) => this.runSearch(search, into),
    );
    for (const results of answered) for (const r of results) this.add(r, true);
  }

  private async runSearch(search: PlannedSearch, into: FhirResource[]): Promise<void> {
    const fetch = () => this.reader.search(search.resourceType, search.params);
    const shared = this.session?.search(search.resourceType, search.params, fetch);
    if (!shared || shared.fresh) this.searches++;
    const outcome = shared
      ? await shared.promise
      : await fetch().then(
          (value) => ({ ok: true as const, value }),
          (error: unknown) => ({ ok: false as const, error }),
        );
    if (outcome.ok) into.push(...outcome.value);
    else if (search.fallback && outcome.error instanceof CodeInUnsupportedError) {
      // The EHR does not take `code:in`: the same codes, listed.
      if (!this.codeInRefused)
        this.issues.push({
          severity: 'information',
          code: 'code-in-unsupported',
          message: 'the EHR does not support code:in searches; value set codes were listed instead',
        });
      this.codeInRefused = true;
      for (const fallback of search.fallback) await this.runSearch(fallback, into);
    } else {
      const error = outcome.error;
      this.issues.push({
        severity: 'warning',
        code: 'search-failed',
        message: `${search.resourceType} search failed: ${error instanceof Error ? error.message : 'error'}`,
      });
    }
  }

  /** Non-compartment resources (Practitioner, Organization…) the results reference, of the types the libraries read. */
  async referenced(requirements: DataRequirements, user: string | undefined): Promise<void> {
    const wantedTypes = new Set(
      requirements.retrieves.map((r) => r.resourceType).filter((t) => NON_COMPARTMENT_TYPES.has(t)),
    );
    const referenced = referencedNonCompartment([...this.resources.values()]).filter((ref) =>
      wantedTypes.has(ref.split('/')[0]!),
    );
    const userType = parseResourceReference(user)?.type;
    if (user && userType && wantedTypes.has(userType)) referenced.push(user);
    const missing = [...new Set(referenced)].filter((ref) => !this.resources.has(ref));
    for (const r of await Promise.all(missing.map((ref) => this.read(ref)))) this.add(r);
  }

  /** FHIRPath environment (SDC launch context): %patient, %encounter, %order, %coverage, %user, %questionnaire. */
  async expressionEnv(
    request: PrefillRequest,
    patient: FhirResource | undefined,
    fhirpathText: string[],
  ): Promise<Record<string, unknown>> {
    const { questionnaire } = request;
    const env: Record<string, unknown> = { ...(patient ? { patient } : {}), questionnaire };
    if (fhirpathText.length === 0 || !patient) return env;
    const user =
      request.user && fhirpathText.some((t) => t.includes('%user'))
        ? (this.get(request.user) ?? (await this.read(request.user)))
        : undefined;
    Object.assign(env, {
      ...(this.get(request.encounter) ? { encounter: this.get(request.encounter) } : {}),
      ...(this.get(request.order) ? { order: this.get(request.order) } : {}),
      ...(this.get(request.coverage) ? { coverage: this.get(request.coverage) } : {}),
      ...(user ? { user } : {}),
    });
    for (const name of launchContextNames(questionnaire)) {
      if (!(name in env))
        this.issues.push({
          severity: 'information',
          code: 'launch-context-missing',
          message: `launchContext ${name} is not available`,
        });
    }
    return env;
  }
}
