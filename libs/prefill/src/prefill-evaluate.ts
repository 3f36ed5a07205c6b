import type { ElmLibrary, FhirResource } from '@dtr/fhir';
import { cql, type FhirModelVersion, patientFor, wrap } from './cql-runtime.js';
import type { PrefillSession } from './prefill-session.js';
import type { PackageEvaluation } from './prefill-strategy.js';
import type { PrefillIssue } from './prefill.types.js';

/** CQL parameters a library may declare for the order in context, by the order's type. */
const ORDER_PARAMETER: Record<string, string> = {
  DeviceRequest: 'device_request',
  ServiceRequest: 'service_request',
  MedicationRequest: 'medication_request',
  NutritionOrder: 'nutrition_order',
  CommunicationRequest: 'communication_request',
  Appointment: 'appointment',
  Encounter: 'encounter',
};

export interface EvaluationInput {
  prepared: PackageEvaluation;
  requested: Array<{ library: string; define: string }>;
  resources: FhirResource[];
  context: { order?: FhirResource; coverage?: FhirResource; encounter?: FhirResource };
  now: Date;
  session?: PrefillSession;
  issues: PrefillIssue[];
}

/** The FHIR model version the first requested library uses. */
function modelVersion(elms: ElmLibrary[], library: string | undefined): FhirModelVersion {
  return elms
    .find((e) => e.library.identifier.id === library)
    ?.library.usings?.def?.find((u) => u.localIdentifier === 'FHIR')?.version === '4.0.0'
    ? '4.0.0'
    : '4.0.1';
}

/** The launch context as parameters a library declares (`device_request`, `Coverage`, `encounter`…). */
function parametersFor(
  elm: ElmLibrary,
  version: FhirModelVersion,
  context: EvaluationInput['context'],
): Record<string, unknown> {
  const declaredParams = new Set((elm.library.parameters?.def ?? []).map((p) => p.name));
  const parameters: Record<string, unknown> = {};
  const { order, coverage, encounter } = context;
  if (order) {
    const name = ORDER_PARAMETER[order.resourceType];
    if (name && declaredParams.has(name)) parameters[name] = wrap(version, order);
  }
  for (const name of ['Coverage', 'coverage'])
    if (coverage && declaredParams.has(name)) parameters[name] = wrap(version, coverage);
  for (const name of ['encounter', 'Encounter'])
    if (encounter && declaredParams.has(name)) parameters[name] = wrap(version, encounter);
  return parameters;
}

/**
 * Evaluates only the requested defines, each isolated (one failing define never aborts the others); with a session,
 * a define already evaluated for this patient and launch is not evaluated again. Values by `Library.Define`.
 */
export async function evaluateDefines(
  input: EvaluationInput,
): Promise<{ values: Map<string, unknown>; evaluated: number }> {
  const { prepared, requested, session, issues } = input;
  const values = new Map<string, unknown>();
  let evaluated = 0;
  if (requested.length === 0) return { values, evaluated };
  const version = modelVersion(prepared.elms, requested[0]!.library);
  const cqlPatient = session ? session.patient(version, input.resources) : patientFor(version, input.resources);
  const codes = prepared.codeService();
  const executionTime = cql.DateTime.fromJSDate(input.now, 0);
  for (const library of new Set(requested.map((r) => r.library))) {
    const elm = prepared.index.get(library)!;
    const compiled = prepared.library(library, elm.library.identifier.version);
    if (!compiled) {
      issues.push({
        severity: 'warning',
        code: 'library-unresolved',
        message: `${library} could not be loaded`,
        library,
      });
      continue;
    }
    const parameters = parametersFor(elm, version, input.context);
    const make = () => new cql.PatientContext(compiled, cqlPatient, codes, parameters, executionTime);
    const versionKey = `${library}|${elm.library.identifier.version ?? ''}`;
    const context = session ? session.context(versionKey, make) : make();
    for (const { define } of requested.filter((r) => r.library === library)) {
      const evaluate = (): Promise<unknown> => compiled.expressions[define]!.execute(context);
      const outcome = session
        ? await session.value(`${versionKey}.${define}`, evaluate)
        : await evaluate().then(
            (value) => ({ ok: true as const, value, fresh: true }),
            (error: unknown) => ({ ok: false as const, error, fresh: true }),
          );
      if (outcome.fresh) evaluated++;
      if (outcome.ok) values.set(`${library}.${define}`, outcome.value);
      else
        issues.push({
          severity: 'warning',
          code: 'define-failed',
          message: `${library}.${define} could not be evaluated: ${outcome.error instanceof Error ? outcome.error.message.slice(0, 200) : 'error'}`,
          library,
          define,
        });
    }
  }
  return { values, evaluated };
}
