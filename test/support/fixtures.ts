/**
 * The resources a DTR session starts from, as the tests' sandbox EHR holds them: a patient's coverage with the
 * sandbox payer and a device order whose HCPCS code the payer's rules map to a questionnaire.
 */

/** An active Coverage of `patient` with the sandbox payer (payor identifier SANDBOX-PAYER). */
export function sandboxCoverage(id: string, patient: string, payorReference?: string) {
  return {
    resourceType: 'Coverage',
    id,
    status: 'active',
    beneficiary: { reference: `Patient/${patient}` },
    payor: [
      {
        ...(payorReference ? { reference: payorReference } : {}),
        identifier: { system: 'http://example.org/payer-id', value: 'SANDBOX-PAYER' },
      },
    ],
  };
}

/** An active DeviceRequest of `patient` for HCPCS `code` (E0424: stationary oxygen, the home-oxygen example). */
export function deviceOrder(id: string, patient: string, code = 'E0424') {
  return {
    resourceType: 'DeviceRequest',
    id,
    status: 'active',
    intent: 'order',
    subject: { reference: `Patient/${patient}` },
    codeCodeableConcept: { coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code }] },
  };
}

const SDC = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/';

/**
 * The SDC launchContext extension of a questionnaire whose expressions read `%patient` (the launch's patient).
 * @see https://hl7.org/fhir/uv/sdc/StructureDefinition-sdc-questionnaire-launchContext.html
 */
export const PATIENT_LAUNCH_CONTEXT = {
  url: `${SDC}sdc-questionnaire-launchContext`,
  extension: [
    { url: 'name', valueCoding: { system: 'http://hl7.org/fhir/uv/sdc/CodeSystem/launchContext', code: 'patient' } },
    { url: 'type', valueCode: 'Patient' },
  ],
};

/** A date item `birth-date` prefilled from the launch's patient (FHIRPath initialExpression `%patient.birthDate`). */
export const BIRTH_DATE_ITEM = {
  linkId: 'birth-date',
  text: 'Date of birth',
  type: 'date',
  extension: [
    {
      url: `${SDC}sdc-questionnaire-initialExpression`,
      valueExpression: { language: 'text/fhirpath', expression: '%patient.birthDate' },
    },
  ],
};
