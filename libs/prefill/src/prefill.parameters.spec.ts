import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { BundleReader } from './patient-data-reader.js';
import { PrefillEngine } from './prefill.engine.js';

// A hand-written ELM library declaring the launch context as parameters, the way payers' libraries do.
const idOf = (parameter: string) => ({
  type: 'Property',
  path: 'value',
  source: { type: 'Property', path: 'id', source: { type: 'ParameterRef', name: parameter } },
});
const elm = {
  library: {
    identifier: { id: 'ContextParameters', version: '1.0.0' },
    schemaIdentifier: { id: 'urn:hl7-org:elm', version: 'r1' },
    usings: {
      def: [
        { localIdentifier: 'System', uri: 'urn:hl7-org:elm-types:r1' },
        { localIdentifier: 'FHIR', uri: 'http://hl7.org/fhir', version: '4.0.1' },
      ],
    },
    parameters: {
      def: ['device_request', 'Coverage', 'encounter'].map((name) => ({ name, accessLevel: 'Public' })),
    },
    statements: {
      def: [
        {
          name: 'Patient',
          context: 'Patient',
          expression: {
            type: 'SingletonFrom',
            operand: { type: 'Retrieve', dataType: '{http://hl7.org/fhir}Patient' },
          },
        },
        { name: 'OrderId', context: 'Patient', accessLevel: 'Public', expression: idOf('device_request') },
        { name: 'CoverageId', context: 'Patient', accessLevel: 'Public', expression: idOf('Coverage') },
        { name: 'EncounterId', context: 'Patient', accessLevel: 'Public', expression: idOf('encounter') },
      ],
    },
  },
};
const library = {
  resourceType: 'Library',
  id: 'context-parameters',
  url: 'http://example.org/Library/ContextParameters',
  version: '1.0.0',
  content: [{ contentType: 'application/elm+json', data: Buffer.from(JSON.stringify(elm)).toString('base64') }],
};
const item = (linkId: string, define: string) => ({
  linkId,
  type: 'string',
  extension: [
    {
      url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
      valueExpression: { language: 'text/cql', expression: `"ContextParameters".${define}` },
    },
  ],
});
const questionnaire = {
  resourceType: 'Questionnaire',
  id: 'context',
  url: 'http://example.org/Questionnaire/context',
  status: 'active',
  extension: [
    {
      url: 'http://hl7.org/fhir/StructureDefinition/cqf-library',
      valueCanonical: 'http://example.org/Library/ContextParameters',
    },
  ],
  item: [item('order', 'OrderId'), item('coverage', 'CoverageId'), item('encounter', 'EncounterId')],
};

describe('CQL parameters bound from the launch context', () => {
  it('binds the order by its type, the coverage and the encounter to the parameters a library declares', async () => {
    const pkg = QuestionnairePackage.fromResources([questionnaire, library] as FhirResource[]);
    const reader = new BundleReader([
      { resourceType: 'Patient', id: 'p1' },
      { resourceType: 'DeviceRequest', id: 'o1', subject: { reference: 'Patient/p1' } },
      { resourceType: 'Coverage', id: 'c1', beneficiary: { reference: 'Patient/p1' } },
      { resourceType: 'Encounter', id: 'e1', subject: { reference: 'Patient/p1' } },
    ]);
    const result = await new PrefillEngine(reader).run({
      pkg,
      questionnaire: pkg.questionnaires[0]!,
      patientId: 'p1',
      order: 'DeviceRequest/o1',
      coverage: 'Coverage/c1',
      encounter: 'Encounter/e1',
      igVersion: '2.2',
    });
    const answers = Object.fromEntries(
      (result.questionnaireResponse['item'] as Array<{ linkId: string; answer: Array<{ valueString: string }> }>).map(
        (i) => [i.linkId, i.answer[0]!.valueString],
      ),
    );
    expect(answers).toEqual({ order: 'o1', coverage: 'c1', encounter: 'e1' });
    expect(result.issues.filter((i) => i.severity !== 'information')).toEqual([]);
  });
});
