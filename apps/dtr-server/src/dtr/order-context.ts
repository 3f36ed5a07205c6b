// What a DTR session works on, found in every shape EHRs give it: orders named by the launch, a Task whose focus and
// basedOn name them, an Encounter or Appointment that is itself the order, or the clinician's choice in the order
// picker; the coverage(s) and coverage-assertion id an order's CRD coverage-information extension carries.
import { type FhirResource, parseResourceReference, relativeReference } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';
import { ORDER_TYPES } from '@dtr/smart';

/** @see https://hl7.org/fhir/us/davinci-crd/StructureDefinition-ext-coverage-information.html */
const COVERAGE_INFORMATION = 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information';

interface Extension {
  url?: string;
  valueReference?: { reference?: string };
  valueString?: string;
  extension?: Extension[];
}

export interface CoverageInformation {
  /** The coverage it is about, relative (`Coverage/<id>`), when given as a literal reference. */
  coverage?: string;
  /** The CRD coverage-assertion id, passed to `$questionnaire-package` as `context`. */
  assertionId?: string;
}

/** `Type/id` of a reference (absolute or relative, version dropped), or undefined when it is not one. */
export function relative(reference: string | undefined): string | undefined {
  const parsed = parseResourceReference(reference);
  return parsed ? relativeReference(parsed) : undefined;
}

/** Every coverage-information extension of an order (there may be several: one per coverage). */
export function coverageInformationOf(order: FhirResource): CoverageInformation[] {
  const extensions = Array.isArray(order['extension']) ? (order['extension'] as Extension[]) : [];
  return extensions
    .filter((e) => e.url === COVERAGE_INFORMATION && Array.isArray(e.extension))
    .map((e) => {
      const coverage = relative(e.extension!.find((x) => x.url === 'coverage')?.valueReference?.reference);
      const assertion = e.extension!.find((x) => x.url === 'coverage-assertion-id')?.valueString;
      return {
        ...(coverage?.startsWith('Coverage/') ? { coverage } : {}),
        ...(typeof assertion === 'string' && assertion.length > 0 && assertion.length <= 200
          ? { assertionId: assertion }
          : {}),
      };
    })
    .filter((c) => c.coverage !== undefined || c.assertionId !== undefined);
}

/** The patient references a resource carries, wherever its type keeps them. */
function patientReferences(resource: FhirResource): string[] {
  const refs: unknown[] = ['subject', 'patient', 'beneficiary', 'for'].map(
    (key) => (resource[key] as { reference?: unknown } | undefined)?.reference,
  );
  // Appointment: the patient is one of the participants.
  for (const participant of Array.isArray(resource['participant'])
    ? (resource['participant'] as Array<{ actor?: { reference?: unknown } }>)
    : [])
    refs.push(participant.actor?.reference);
  return refs.filter((r): r is string => typeof r === 'string' && relative(r)?.startsWith('Patient/') === true);
}

/** Whether the resource is about this patient (its subject/patient/for/beneficiary, or an Appointment participant). */
export function belongsTo(resource: FhirResource, patient: string): boolean {
  return patientReferences(resource).some((ref) => relative(ref) === `Patient/${patient}`);
}

/** Orders a Task points at: its `focus`, then its `basedOn`, those of an order type. */
export function ordersOfTask(task: FhirResource): string[] {
  const refs = [
    (task['focus'] as { reference?: string } | undefined)?.reference,
    ...((task['basedOn'] as Array<{ reference?: string }> | undefined) ?? []).map((b) => b.reference),
  ];
  const out: string[] = [];
  for (const ref of refs.map(relative)) {
    const type = ref?.split('/')[0];
    if (ref && type && ORDER_TYPES.has(type) && !out.includes(ref)) out.push(ref);
  }
  return out;
}

/** Type and id of a context reference; a malformed one is the EHR's error, refused before any read. */
export function splitRef(ref: string): [string, string] {
  const parsed = parseResourceReference(ref);
  if (!parsed) throw new DtrError('INVALID_INPUT', 'the launch context names a malformed reference');
  return [parsed.type, parsed.id];
}
