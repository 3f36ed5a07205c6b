import { describe, expect, it } from 'vitest';
import { compartmentOf, hasPatientSearch } from './patient-compartment.js';

describe('compartmentOf', () => {
  it('reads the patient reference each type has', () => {
    expect(compartmentOf({ resourceType: 'Condition', subject: { reference: 'Patient/p1' } }, 'p1')).toBe('patient');
    expect(compartmentOf({ resourceType: 'Condition', subject: { reference: 'Patient/p2' } }, 'p1')).toBe('foreign');
    expect(compartmentOf({ resourceType: 'Coverage', beneficiary: { reference: 'Patient/p1' } }, 'p1')).toBe('patient');
    expect(compartmentOf({ resourceType: 'Coverage', subscriber: { reference: 'Patient/p1' } }, 'p1')).toBe('foreign');
    expect(compartmentOf({ resourceType: 'AllergyIntolerance', patient: { reference: 'Patient/p1' } }, 'p1')).toBe(
      'patient',
    );
    expect(
      compartmentOf({ resourceType: 'Appointment', participant: [{ actor: { reference: 'Patient/p1' } }] }, 'p1'),
    ).toBe('patient');
    expect(
      compartmentOf(
        { resourceType: 'Observation', subject: { reference: 'https://ehr/fhir/Patient/p1/_history/2' } },
        'p1',
      ),
    ).toBe('patient');
    expect(compartmentOf({ resourceType: 'Observation' }, 'p1')).toBe('foreign');
    expect(compartmentOf({ resourceType: 'Patient', id: 'p2' }, 'p1')).toBe('foreign');
    expect(compartmentOf({ resourceType: 'Practitioner', id: 'x' }, 'p1')).toBe('referenced');
    expect(compartmentOf({ resourceType: 'Questionnaire', id: 'q' }, 'p1')).toBe('unknown');
  });

  it('only types with a patient search parameter are searched by patient', () => {
    expect(hasPatientSearch('Observation')).toBe(true);
    expect(hasPatientSearch('Coverage')).toBe(true);
    expect(hasPatientSearch('SupplyRequest')).toBe(false);
    expect(hasPatientSearch('Practitioner')).toBe(false);
    expect(hasPatientSearch('constructor')).toBe(false);
  });
});
