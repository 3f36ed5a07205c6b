import type { FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { cql, type FhirModelVersion, patientFor } from './cql-runtime.js';

type CqlPatient = NonNullable<ReturnType<typeof patientFor>>;
type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * One patient's prefill across several questionnaires of one package (what a DTR session does for an order): each
 * read and search is made once, and each define is evaluated once, however many questionnaires name it.
 *
 * Why sharing evaluation is safe: a define's answer depends only on the resources its retrieves select. Every
 * questionnaire adds the data its own defines need to the session's pool, so when a later questionnaire needs more,
 * defines already evaluated keep answers computed over complete data for their retrieves, and the records they see
 * are a superset of what they need (retrieves filter by type, code and id themselves). The answers equal those of a
 * prefill per questionnaire (tested on the corpus).
 *
 * A session is bound to the first request's patient, context references and evaluation time; a request that differs
 * is refused (a programming error, not a data problem).
 */
export class PrefillSession {
  private readonly reads = new Map<string, Promise<Outcome<FhirResource | undefined>>>();
  private readonly searches = new Map<string, Promise<Outcome<FhirResource[]>>>();
  /** Every resource gathered, by `Type/id` (by the object itself when it has no id). */
  private readonly pool = new Map<unknown, FhirResource>();
  private readonly contexts = new Map<string, InstanceType<typeof cql.PatientContext>>();
  private readonly values = new Map<string, Outcome<unknown>>();
  private current: { version: FhirModelVersion; patient: CqlPatient } | undefined;
  private binding: string | undefined;
  /** What cql-execution's contexts hold: retrieves go to the current pool, however it has grown. */
  private readonly patientView = {
    findRecords: (profile: string, details?: unknown) => this.current!.patient.findRecords(profile, details as never),
    findRecord: (profile: string, details?: unknown) => this.current!.patient.findRecords(profile, details as never)[0],
  };

  /** Binds the session to one prefill context; throws when a later request names another one. */
  bind(
    pkg: QuestionnairePackage,
    key: { patientId: string; order?: string; coverage?: string; encounter?: string; user?: string; now: Date },
  ): void {
    const binding = JSON.stringify([
      key.patientId,
      key.order,
      key.coverage,
      key.encounter,
      key.user,
      key.now.toISOString(),
    ]);
    if (this.binding === undefined) {
      this.binding = binding;
      this.pkg = pkg;
    } else if (this.binding !== binding || this.pkg !== pkg) {
      throw new Error('a PrefillSession serves one package, patient, launch context and evaluation time');
    }
  }
  private pkg: QuestionnairePackage | undefined;

  read(
    type: string,
    id: string,
    fetch: () => Promise<FhirResource | undefined>,
  ): { promise: Promise<Outcome<FhirResource | undefined>>; fresh: boolean } {
    return memo(this.reads, `${type}/${id}`, fetch);
  }

  search(
    type: string,
    params: Record<string, string>,
    fetch: () => Promise<FhirResource[]>,
  ): { promise: Promise<Outcome<FhirResource[]>>; fresh: boolean } {
    const key = `${type}?${Object.entries(params)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join('&')}`;
    return memo(this.searches, key, fetch);
  }

  /**
   * The patient cql-execution sees: the pool of every resource gathered so far in the session, these included, and
   * these last, in their order: the resources a questionnaire's retrieves select are then in the order its own
   * searches gave them (as plain evaluation over the whole record has them), however earlier questionnaires
   * gathered some of them.
   */
  patient(version: FhirModelVersion, resources: Iterable<FhirResource>): CqlPatient {
    const incoming = [...resources];
    const tail = [...this.pool.values()].slice(-incoming.length);
    const unchanged = incoming.length === tail.length && incoming.every((r, i) => tail[i] === r);
    if (!unchanged)
      for (const r of incoming) {
        const key = r.id ? `${r.resourceType}/${r.id}` : r;
        this.pool.delete(key);
        this.pool.set(key, r);
      }
    if (this.current && this.current.version !== version)
      throw new Error('a PrefillSession evaluates one FHIR model version');
    if (!this.current || !unchanged) {
      const patient = patientFor(version, [...this.pool.values()]);
      if (!patient) throw new Error('no Patient among the session resources');
      this.current = { version, patient };
    }
    return this.patientView as unknown as CqlPatient;
  }

  /** The evaluation context of a library, made once per session (its cache of define results is shared). */
  context(key: string, make: () => InstanceType<typeof cql.PatientContext>): InstanceType<typeof cql.PatientContext> {
    let context = this.contexts.get(key);
    if (!context) this.contexts.set(key, (context = make()));
    return context;
  }

  /** A define's outcome, evaluated once per session. */
  async value(key: string, evaluate: () => Promise<unknown>): Promise<Outcome<unknown> & { fresh: boolean }> {
    const known = this.values.get(key);
    if (known) return { ...known, fresh: false };
    let outcome: Outcome<unknown>;
    try {
      outcome = { ok: true, value: await evaluate() };
    } catch (error) {
      outcome = { ok: false, error };
    }
    this.values.set(key, outcome);
    return { ...outcome, fresh: true };
  }
}

function memo<T>(
  map: Map<string, Promise<Outcome<T>>>,
  key: string,
  fetch: () => Promise<T>,
): { promise: Promise<Outcome<T>>; fresh: boolean } {
  const known = map.get(key);
  if (known) return { promise: known, fresh: false };
  const promise = fetch().then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  map.set(key, promise);
  return { promise, fresh: true };
}
