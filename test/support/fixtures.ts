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
