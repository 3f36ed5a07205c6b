import { describe, expect, it } from 'vitest';
import { checkedBundleResources, resourceShapeProblem } from './resource-shape.js';

describe('resourceShapeProblem: each element judged by its type where it stands', () => {
  it('accepts elements whose name means another type elsewhere, as EHR exports carry them', () => {
    const accepted = [
      // `language` is a code on a resource and a CodeableConcept here.
      {
        resourceType: 'Patient',
        language: 'en-US',
        communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en-US' }] } }],
      },
      // `reference` is a Reference here, not a string.
      {
        resourceType: 'Consent',
        status: 'active',
        provision: { actor: [{ role: { text: 'grantee' }, reference: { reference: 'Practitioner/1' } }] },
      },
      // ... and an Identifier here.
      { resourceType: 'ExplanationOfBenefit', related: [{ reference: { system: 'urn:claims', value: 'c-1' } }] },
      // `expression` is a list of strings in an OperationOutcome (a search Bundle's outcome entry).
      {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'warning', code: 'processing', expression: ['Observation.code'] }],
      },
      // `prefix` is a string on a Questionnaire item and a list in a HumanName.
      {
        resourceType: 'Questionnaire',
        status: 'active',
        item: [{ linkId: '1', prefix: '1.', type: 'string' }],
        contained: [{ resourceType: 'Practitioner', name: [{ prefix: ['Dr'], family: 'Osei' }] }],
      },
      // `item` is one Reference in a List entry.
      { resourceType: 'List', status: 'current', mode: 'working', entry: [{ item: { reference: 'Condition/1' } }] },
    ];
    for (const resource of accepted) expect(resourceShapeProblem(resource), resource.resourceType).toBeUndefined();
  });

  it('refuses a wrong-typed element with its path, nested resources included', () => {
    expect(resourceShapeProblem({ resourceType: 'Questionnaire', status: 'active', item: 5 })).toBe(
      'Questionnaire.item must be an array',
    );
    expect(
      resourceShapeProblem({
        resourceType: 'Questionnaire',
        status: 'active',
        extension: [{ url: 'x', valueExpression: { language: 'text/cql', expression: { a: 1 } } }],
      }),
    ).toBe('Questionnaire.extension[0].valueExpression.expression must be a string, not an object');
    expect(
      resourceShapeProblem({
        resourceType: 'Parameters',
        parameter: [{ name: 'p', resource: { resourceType: 'Library', content: { data: 'x' } } }],
      }),
    ).toBe('Parameters.parameter[0].resource.content must be an array');
    expect(resourceShapeProblem({ resourceType: 'Patient', communication: [{ language: 'en' }] })).toBe(
      'Patient.communication[0].language must be an object (CodeableConcept), not a string',
    );
    expect(resourceShapeProblem({ resourceType: 'Questionnaire', status: 'active', item: [null] })).toBe(
      'Questionnaire.item[0] must be an object, not null',
    );
    expect(resourceShapeProblem({ resourceType: 'Patient', name: [{ given: ['Ana', null] }] })).toBeUndefined();
    expect(resourceShapeProblem([])).toBe('a resource must be an object (it is an array)');
    expect(resourceShapeProblem({ id: 'x' })).toBe('a resource must have a resourceType');
  });
});

describe('checkedBundleResources', () => {
  const bundle = {
    resourceType: 'Bundle',
    entry: [
      { fullUrl: 'urn:uuid:1', resource: { resourceType: 'Patient', id: 'p', birthDate: 19480709 } },
      { resource: { resourceType: 'Observation', status: 'final' } },
    ],
  };

  it('refuses a bundle with a malformed resource, naming the entry', () => {
    expect(() => checkedBundleResources(bundle, 'the questionnaire package', 'UPSTREAM_ERROR')).toThrow(
      'the questionnaire package: entry 0 is malformed: Patient.birthDate must be a string, not a number',
    );
  });

  it('with elements "envelope", checks only the bundle structure and leaves element judgement to the caller', () => {
    const out = checkedBundleResources(bundle, 'the patient bundle', 'INVALID_INPUT', { elements: 'envelope' });
    expect(out.map((e) => e.resource.resourceType)).toEqual(['Patient', 'Observation']);
    expect(() =>
      checkedBundleResources({ entry: [{ resource: 'Patient' }] }, 'the patient bundle', 'INVALID_INPUT', {
        elements: 'envelope',
      }),
    ).toThrow('the patient bundle: entry 0 is malformed: a resource must be an object (it is a string)');
    expect(() =>
      checkedBundleResources(
        { entry: [{ resource: { resourceType: 'Patient', id: { __proto__: null } } }] },
        'the patient bundle',
        'INVALID_INPUT',
        { elements: 'envelope' },
      ),
    ).toThrow('the patient bundle: entry 0 is malformed: Patient.id must be a string (it is an object)');
    expect(() =>
      checkedBundleResources({ entry: [{ fullUrl: 7, resource: { resourceType: 'Patient' } }] }, 'b', 'INVALID_INPUT'),
    ).toThrow('b: Bundle.entry[0].fullUrl must be a string');
  });
});
