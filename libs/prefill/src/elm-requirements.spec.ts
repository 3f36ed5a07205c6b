import type { ElmLibrary } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import {
  dataRequirements,
  indexLibraries,
  planSearches,
  referencesTo,
  typesReadByReference,
} from './elm-requirements.js';

// Hand-written ELM in the shapes the CQL-to-ELM translator produces for the patterns payers' libraries use.
const retrieve = (type: string, codes?: object) => ({
  type: 'Retrieve',
  dataType: `{http://hl7.org/fhir}${type}`,
  ...(codes ? { codes } : {}),
});
const idOf = (alias: string) => ({
  type: 'FunctionRef',
  libraryName: 'FHIRHelpers',
  name: 'ToString',
  operand: [{ type: 'Property', path: 'id', scope: alias }],
});
const prefixed = (type: string, alias: string) => ({
  type: 'Concatenate',
  operand: [{ type: 'Literal', valueType: '{urn:hl7-org:elm-types:r1}String', value: `${type}/` }, idOf(alias)],
});
const query = (type: string, alias: string, where: object) => ({
  type: 'Query',
  source: [{ alias, expression: retrieve(type) }],
  relationship: [],
  where,
});
const referenceOf = (parameter: string, element: string) => ({
  type: 'Property',
  path: 'value',
  source: {
    type: 'Property',
    path: 'reference',
    source: { type: 'Property', path: element, source: { type: 'ParameterRef', name: parameter } },
  },
});

function library(statements: Array<Record<string, unknown>>): ElmLibrary {
  return {
    library: {
      identifier: { id: 'Sample', version: '1.0.0' },
      schemaIdentifier: { id: 'urn:hl7-org:elm', version: 'r1' },
      usings: { def: [{ localIdentifier: 'FHIR', uri: 'http://hl7.org/fhir', version: '4.0.1' }] },
      parameters: { def: [{ name: 'device_request' }] },
      codeSystems: { def: [{ name: 'LOINC', id: 'http://loinc.org' }] },
      codes: {
        def: [
          { name: 'pO2', id: '2703-7', codeSystem: { name: 'LOINC' } },
          { name: 'SpO2', id: '59408-5', codeSystem: { name: 'LOINC' } },
        ],
      },
      statements: { def: statements.map((s) => ({ context: 'Patient', ...s })) },
    },
  } as unknown as ElmLibrary;
}

const requirementsOf = (lib: ElmLibrary, define: string) =>
  dataRequirements(indexLibraries([lib]), [{ library: 'Sample', define }], () => undefined);

describe('data requirements', () => {
  it('a retrieve that pins the id to a reference from the launch context is read by reference, not searched', () => {
    const lib = library([
      { name: 'EncounterReference', expression: referenceOf('device_request', 'encounter') },
      {
        name: 'RequestEncounter',
        expression: query('Encounter', 'E', {
          type: 'Equal',
          operand: [prefixed('Encounter', 'E'), { type: 'ExpressionRef', name: 'EncounterReference' }],
        }),
      },
    ]);
    const requirements = requirementsOf(lib, 'RequestEncounter');
    expect(requirements.retrieves).toEqual([{ resourceType: 'Encounter', byReference: true }]);
    expect(typesReadByReference(requirements.retrieves)).toEqual(new Set(['Encounter']));
    expect(planSearches(requirements.retrieves, 'p1')).toEqual([]);
    const order = {
      resourceType: 'DeviceRequest',
      id: 'o1',
      encounter: { reference: 'Encounter/e7' },
      insurance: [{ reference: 'Coverage/c1' }],
    };
    expect(referencesTo([order], new Set(['Encounter']))).toEqual(['Encounter/e7']);
  });

  it('an id compared with something found in other patient data, or with a literal alone, still searches the type', () => {
    const fromData = library([
      { name: 'AnyObservation', expression: retrieve('Observation') },
      {
        name: 'Linked',
        expression: query('Encounter', 'E', {
          type: 'Equal',
          operand: [
            prefixed('Encounter', 'E'),
            { type: 'Property', path: 'reference', source: { type: 'ExpressionRef', name: 'AnyObservation' } },
          ],
        }),
      },
    ]);
    expect(planSearches(requirementsOf(fromData, 'Linked').retrieves, 'p1')).toContainEqual({
      resourceType: 'Encounter',
      params: { patient: 'p1' },
    });
    const literal = library([
      {
        name: 'Fixed',
        expression: query('Encounter', 'E', {
          type: 'Equal',
          operand: [idOf('E'), { type: 'Literal', valueType: '{urn:hl7-org:elm-types:r1}String', value: 'e1' }],
        }),
      },
    ]);
    expect(planSearches(requirementsOf(literal, 'Fixed').retrieves, 'p1')).toEqual([
      { resourceType: 'Encounter', params: { patient: 'p1' } },
    ]);
  });

  it('when another define needs the whole type, the type is searched even though one retrieve is by reference', () => {
    const lib = library([
      {
        name: 'ById',
        expression: query('Encounter', 'E', {
          type: 'Equal',
          operand: [prefixed('Encounter', 'E'), referenceOf('device_request', 'encounter')],
        }),
      },
      { name: 'All', expression: retrieve('Encounter') },
      {
        name: 'Both',
        expression: {
          type: 'Union',
          operand: [
            { type: 'ExpressionRef', name: 'ById' },
            { type: 'ExpressionRef', name: 'All' },
          ],
        },
      },
    ]);
    const requirements = requirementsOf(lib, 'Both');
    expect(typesReadByReference(requirements.retrieves)).toEqual(new Set());
    expect(planSearches(requirements.retrieves, 'p1')).toEqual([
      { resourceType: 'Encounter', params: { patient: 'p1' } },
    ]);
  });

  it('codes named through a define of code references narrow the search', () => {
    const lib = library([
      {
        name: 'OxygenCodes',
        expression: {
          type: 'List',
          element: [
            { type: 'CodeRef', name: 'pO2' },
            { type: 'CodeRef', name: 'SpO2' },
          ],
        },
      },
      { name: 'Oxygen', expression: retrieve('Observation', { type: 'ExpressionRef', name: 'OxygenCodes' }) },
    ]);
    expect(planSearches(requirementsOf(lib, 'Oxygen').retrieves, 'p1')).toEqual([
      {
        resourceType: 'Observation',
        params: { patient: 'p1', code: 'http://loinc.org|2703-7,http://loinc.org|59408-5' },
      },
    ]);
  });

  it('codes from a define that depends on patient data or a parameter cannot be known: the type is searched whole', () => {
    const lib = library([
      {
        name: 'Dynamic',
        expression: { type: 'Property', path: 'code', source: { type: 'ParameterRef', name: 'device_request' } },
      },
      { name: 'Matching', expression: retrieve('Observation', { type: 'ExpressionRef', name: 'Dynamic' }) },
    ]);
    expect(planSearches(requirementsOf(lib, 'Matching').retrieves, 'p1')).toEqual([
      { resourceType: 'Observation', params: { patient: 'p1' } },
    ]);
  });
});
