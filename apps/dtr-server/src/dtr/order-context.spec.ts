import { describe, expect, it } from 'vitest';
import { belongsTo, coverageInformationOf, ordersOfTask } from './order-context.js';

const CRD = 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information';

describe('order context', () => {
  it('reads every coverage-information extension: the coverage (relative) and its assertion id', () => {
    const order = {
      resourceType: 'DeviceRequest',
      extension: [
        {
          url: CRD,
          extension: [
            { url: 'coverage', valueReference: { reference: 'https://ehr.example.org/fhir/Coverage/c1' } },
            { url: 'coverage-assertion-id', valueString: 'A-1' },
          ],
        },
        { url: CRD, extension: [{ url: 'coverage', valueReference: { reference: 'Coverage/c2' } }] },
        // Not a coverage: ignored; another extension: ignored.
        { url: CRD, extension: [{ url: 'coverage', valueReference: { reference: 'Patient/p1' } }] },
        { url: 'http://example.org/other', extension: [{ url: 'coverage-assertion-id', valueString: 'X' }] },
      ],
    };
    expect(coverageInformationOf(order)).toEqual([
      { coverage: 'Coverage/c1', assertionId: 'A-1' },
      { coverage: 'Coverage/c2' },
    ]);
    expect(coverageInformationOf({ resourceType: 'DeviceRequest' })).toEqual([]);
  });

  it("knows a resource's patient wherever its type keeps it", () => {
    expect(belongsTo({ resourceType: 'DeviceRequest', subject: { reference: 'Patient/p1' } }, 'p1')).toBe(true);
    expect(belongsTo({ resourceType: 'NutritionOrder', patient: { reference: 'Patient/p1' } }, 'p1')).toBe(true);
    expect(belongsTo({ resourceType: 'Task', for: { reference: 'https://ehr/fhir/Patient/p1' } }, 'p1')).toBe(true);
    expect(
      belongsTo(
        {
          resourceType: 'Appointment',
          participant: [{ actor: { reference: 'Practitioner/x' } }, { actor: { reference: 'Patient/p1' } }],
        },
        'p1',
      ),
    ).toBe(true);
    expect(belongsTo({ resourceType: 'DeviceRequest', subject: { reference: 'Patient/p2' } }, 'p1')).toBe(false);
    expect(belongsTo({ resourceType: 'DeviceRequest', subject: { reference: 'Group/p1' } }, 'p1')).toBe(false);
    expect(belongsTo({ resourceType: 'DeviceRequest' }, 'p1')).toBe(false);
  });

  it("takes a Task's focus, then its basedOn, only of order types", () => {
    expect(
      ordersOfTask({
        resourceType: 'Task',
        focus: { reference: 'ServiceRequest/s1' },
        basedOn: [{ reference: 'DeviceRequest/d1' }, { reference: 'ServiceRequest/s1' }, { reference: 'CarePlan/c1' }],
      }),
    ).toEqual(['ServiceRequest/s1', 'DeviceRequest/d1']);
    expect(ordersOfTask({ resourceType: 'Task', focus: { reference: 'Questionnaire/q' } })).toEqual([]);
  });
});
