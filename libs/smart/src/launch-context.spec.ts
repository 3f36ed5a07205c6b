import { describe, expect, it } from 'vitest';
import { dtrContextOf, parseLaunchContext } from './launch-context.js';

describe('parseLaunchContext', () => {
  it('reads the SMART 2.0 string form of fhirContext', () => {
    const context = parseLaunchContext({
      patient: 'pat-1',
      encounter: 'enc-1',
      need_patient_banner: false,
      fhirContext: ['DeviceRequest/dr-1', 'Coverage/cov-1', 'not a reference'],
    });
    expect(context).toMatchObject({ patient: 'pat-1', encounter: 'enc-1', needPatientBanner: false });
    expect(context.fhirContext).toEqual([
      { reference: 'DeviceRequest/dr-1', type: 'DeviceRequest' },
      { reference: 'Coverage/cov-1', type: 'Coverage' },
    ]);
  });

  it('reads the SMART 2.1+ object form, with canonical, identifier, type and role', () => {
    const context = parseLaunchContext({
      patient: 'p',
      fhirContext: [
        { reference: 'ServiceRequest/sr-9', role: 'launch-order' },
        { canonical: 'http://payer.example.org/Questionnaire/home-o2|2.0', type: 'Questionnaire' },
        { identifier: { system: 'urn:trn', value: 'TRN-7' }, type: 'Claim', role: 'coverage-assertion' },
        { type: 'Coverage' },
      ],
      tenant: 'north',
      intent: 'order-review',
    });
    expect(context.fhirContext).toEqual([
      { reference: 'ServiceRequest/sr-9', type: 'ServiceRequest', role: 'launch-order' },
      { canonical: 'http://payer.example.org/Questionnaire/home-o2|2.0', type: 'Questionnaire' },
      { identifier: { system: 'urn:trn', value: 'TRN-7' }, type: 'Claim', role: 'coverage-assertion' },
    ]);
    expect(context.tenant).toBe('north');
    expect(dtrContextOf(context)).toEqual({
      orders: ['ServiceRequest/sr-9'],
      tasks: [],
      orderChosen: false,
      coverages: [],
      questionnaireResponses: [],
      questionnaires: ['http://payer.example.org/Questionnaire/home-o2|2.0'],
      coverageAssertion: 'TRN-7',
    });
  });

  it('reads legacy appContext as query string and as JSON', () => {
    const query = parseLaunchContext({
      appContext: 'order=DeviceRequest/a,MedicationRequest/b&coverage=Coverage/c&response=QuestionnaireResponse/d',
    });
    expect(dtrContextOf(query)).toMatchObject({
      orders: ['DeviceRequest/a', 'MedicationRequest/b'],
      coverages: ['Coverage/c'],
      questionnaireResponses: ['QuestionnaireResponse/d'],
    });
    const json = parseLaunchContext({ appContext: '{"order":["ServiceRequest/x"],"coverage":"Coverage/y"}' });
    expect(dtrContextOf(json)).toMatchObject({ orders: ['ServiceRequest/x'], coverages: ['Coverage/y'] });
  });

  it('drops malformed values instead of trusting them', () => {
    const context = parseLaunchContext({
      patient: '../../etc/passwd',
      encounter: 42,
      fhirContext: [{ reference: 'javascript:alert(1)' }, { canonical: 'ftp://x' }, null, 7],
      need_patient_banner: 'yes',
      appContext: 'order=<script>',
    });
    expect(context.patient).toBeUndefined();
    expect(context.encounter).toBeUndefined();
    expect(context.fhirContext).toEqual([]);
    expect(context.needPatientBanner).toBeUndefined();
    expect(dtrContextOf(context).orders).toEqual([]);
  });

  it('merges fhirContext and appContext without duplicates', () => {
    const context = parseLaunchContext({
      fhirContext: ['DeviceRequest/a', 'Coverage/c'],
      appContext: 'order=DeviceRequest/a&coverage=Coverage/c',
    });
    expect(dtrContextOf(context)).toMatchObject({ orders: ['DeviceRequest/a'], coverages: ['Coverage/c'] });
  });

  it('keeps a Task apart (its focus names the order) and takes an Encounter as the order only when nothing else is', () => {
    const withTask = parseLaunchContext({ fhirContext: ['Task/t1', 'Encounter/e1'] });
    expect(dtrContextOf(withTask)).toMatchObject({ orders: [], tasks: ['Task/t1'] });
    const withOrder = parseLaunchContext({ fhirContext: ['Encounter/e1', 'DeviceRequest/d1'] });
    expect(dtrContextOf(withOrder)).toMatchObject({ orders: ['DeviceRequest/d1'], tasks: [] });
    const encounterOnly = parseLaunchContext({ fhirContext: ['Encounter/e1'] });
    expect(dtrContextOf(encounterOnly)).toMatchObject({ orders: ['Encounter/e1'], orderChosen: false });
    const appointment = parseLaunchContext({ fhirContext: ['Appointment/a1'] });
    expect(dtrContextOf(appointment).orders).toEqual(['Appointment/a1']);
  });

  it("uses the clinician's chosen order only when the launch named none", () => {
    const chosen = { order: 'ServiceRequest/s1', questionnaireResponse: 'QuestionnaireResponse/q1' };
    const none = { ...parseLaunchContext({ patient: 'p1' }), chosen };
    expect(dtrContextOf(none)).toMatchObject({
      orders: ['ServiceRequest/s1'],
      orderChosen: true,
      questionnaireResponses: ['QuestionnaireResponse/q1'],
    });
    const named = { ...parseLaunchContext({ fhirContext: ['DeviceRequest/d1'] }), chosen };
    expect(dtrContextOf(named)).toMatchObject({ orders: ['DeviceRequest/d1'], orderChosen: false });
  });
});
