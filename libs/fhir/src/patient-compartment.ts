import type { FhirResource } from './fhir-client.js';
import { parseResourceReference } from './reference.js';

/**
 * Per resource type with a `patient` search parameter (FHIR R4), the elements its reference to the patient is in
 * (dotted paths through arrays). Only these types are searched with `patient=`.
 * @see https://hl7.org/fhir/R4/compartmentdefinition-patient.html
 */
const PATIENT_PATHS: Record<string, string[]> = {
  Account: ['subject'],
  AllergyIntolerance: ['patient'],
  Appointment: ['participant.actor'],
  Basic: ['subject'],
  BodyStructure: ['patient'],
  CarePlan: ['subject'],
  CareTeam: ['subject'],
  ChargeItem: ['subject'],
  Claim: ['patient'],
  ClaimResponse: ['patient'],
  ClinicalImpression: ['subject'],
  Communication: ['subject'],
  CommunicationRequest: ['subject'],
  Composition: ['subject'],
  Condition: ['subject'],
  Consent: ['patient'],
  Contract: ['subject'],
  Coverage: ['beneficiary'],
  CoverageEligibilityRequest: ['patient'],
  CoverageEligibilityResponse: ['patient'],
  DetectedIssue: ['patient'],
  DeviceRequest: ['subject'],
  DeviceUseStatement: ['subject'],
  DiagnosticReport: ['subject'],
  DocumentManifest: ['subject'],
  DocumentReference: ['subject'],
  Encounter: ['subject'],
  EnrollmentRequest: ['candidate'],
  EpisodeOfCare: ['patient'],
  ExplanationOfBenefit: ['patient'],
  FamilyMemberHistory: ['patient'],
  Flag: ['subject'],
  Goal: ['subject'],
  GuidanceResponse: ['subject'],
  ImagingStudy: ['subject'],
  Immunization: ['patient'],
  ImmunizationEvaluation: ['patient'],
  ImmunizationRecommendation: ['patient'],
  Invoice: ['subject'],
  List: ['subject'],
  Media: ['subject'],
  MedicationAdministration: ['subject'],
  MedicationDispense: ['subject'],
  MedicationRequest: ['subject'],
  MedicationStatement: ['subject'],
  MolecularSequence: ['patient'],
  NutritionOrder: ['patient'],
  Observation: ['subject'],
  Procedure: ['subject'],
  QuestionnaireResponse: ['subject'],
  RelatedPerson: ['patient'],
  RequestGroup: ['subject'],
  ResearchSubject: ['individual'],
  RiskAssessment: ['subject'],
  ServiceRequest: ['subject'],
  Specimen: ['subject'],
  SupplyDelivery: ['patient'],
  Task: ['for'],
  VisionPrescription: ['patient'],
};

/** Types without a `patient` search parameter whose patient is still named by reference (CRD's SupplyRequest). */
const REFERENCE_ONLY_PATHS: Record<string, string[]> = { SupplyRequest: ['deliverTo'] };

/**
 * Types outside the patient compartment that a prefill reaches only by reference from the patient's own resources
 * (who ordered, where, which product): never searched, kept without a patient check.
 */
const REFERENCED_TYPES = new Set([
  'Practitioner',
  'PractitionerRole',
  'Organization',
  'Location',
  'Medication',
  'Device',
  'HealthcareService',
  'Substance',
  'Endpoint',
]);

/** Whether a type can be searched with `patient=` (it has that search parameter). */
export function hasPatientSearch(resourceType: string): boolean {
  return Object.hasOwn(PATIENT_PATHS, resourceType);
}

function referencesAt(value: unknown, path: string[]): string[] {
  if (Array.isArray(value)) return value.flatMap((v) => referencesAt(v, path));
  if (!value || typeof value !== 'object') return [];
  if (path.length === 0) {
    const ref = (value as { reference?: unknown }).reference;
    return typeof ref === 'string' ? [ref] : [];
  }
  return referencesAt((value as Record<string, unknown>)[path[0]!], path.slice(1));
}

/**
 * Where a resource stands with respect to a patient: `patient` (the Patient itself, or its reference to the patient
 * names them), `referenced` (a type outside the compartment, reached by reference), `foreign` (another patient's, or
 * one that names no patient), `unknown` (a type neither in the patient compartment nor reached by reference).
 */
export function compartmentOf(
  resource: FhirResource,
  patientId: string,
): 'patient' | 'referenced' | 'foreign' | 'unknown' {
  if (resource.resourceType === 'Patient') return resource.id === patientId ? 'patient' : 'foreign';
  if (REFERENCED_TYPES.has(resource.resourceType)) return 'referenced';
  const paths = PATIENT_PATHS[resource.resourceType] ?? REFERENCE_ONLY_PATHS[resource.resourceType];
  if (!paths) return 'unknown';
  const refs = paths.flatMap((p) => referencesAt(resource, p.split('.')));
  const ours = refs.some((ref) => {
    const parsed = parseResourceReference(ref);
    return parsed?.type === 'Patient' && parsed.id === patientId;
  });
  return ours ? 'patient' : 'foreign';
}
