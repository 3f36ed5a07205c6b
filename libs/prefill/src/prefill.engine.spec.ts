import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { BundleReader } from './patient-data-reader.js';
import { INFORMATION_ORIGIN, PrefillEngine } from './prefill.engine.js';
import { setEngineFastPaths } from './cql-runtime.js';

// Our own fixture package (CQL compiled to ELM by scripts/compile-cql.mjs).
const FIXTURE = path.resolve(import.meta.dirname, '../../../apps/sandbox/fixtures/packages/home-oxygen-example');
const fixtureResources = readdirSync(FIXTURE)
  .filter((f) => f.endsWith('.json') && f !== 'rules.json')
  .map((f) => JSON.parse(readFileSync(path.join(FIXTURE, f), 'utf8')) as FhirResource);

const patient = {
  resourceType: 'Patient',
  id: 'p1',
  active: true,
  gender: 'female',
  birthDate: '1950-04-02',
  name: [{ family: 'Rivera', given: ['Ana'] }],
};
const condition = (id: string, code: string, patientId = 'p1') => ({
  resourceType: 'Condition',
  id,
  subject: { reference: `Patient/${patientId}` },
  code: { coding: [{ system: 'http://snomed.info/sct', code }] },
});
const order = {
  resourceType: 'DeviceRequest',
  id: 'o1',
  status: 'active',
  intent: 'order',
  subject: { reference: 'Patient/p1' },
  requester: { reference: 'Practitioner/pr1' },
};

type QRItem = { linkId: string; answer?: Array<Record<string, unknown>>; item?: QRItem[] };
function answers(qr: FhirResource): Map<string, Array<Record<string, unknown>>> {
  const out = new Map<string, Array<Record<string, unknown>>>();
  const walk = (items: QRItem[] = []) => {
    for (const item of items) {
      if (item.answer) out.set(item.linkId, item.answer);
      walk(item.item);
    }
  };
  walk(qr['item'] as QRItem[]);
  return out;
}
const value = (answer: Record<string, unknown> | undefined) => {
  if (!answer) return undefined;
  const { extension: _e, ...rest } = answer;
  return rest;
};

describe('PrefillEngine on our own fixture package', () => {
  const pkg = QuestionnairePackage.fromResources(fixtureResources);
  const questionnaire = pkg.questionnaires[0]!;

  it('answers from CQL with typed values and an origin on every answer (auto-client in 2.2, auto before)', async () => {
    const reader = new BundleReader([patient, condition('c1', '13645005'), condition('c2', '38341003'), order]);
    const result = await new PrefillEngine(reader).run({
      pkg,
      questionnaire,
      patientId: 'p1',
      order: 'DeviceRequest/o1',
      user: 'Practitioner/pr1',
      igVersion: '2.2',
    });
    const a = answers(result.questionnaireResponse);
    expect(value(a.get('birth-date')?.[0])).toEqual({ valueDate: '1950-04-02' });
    expect(value(a.get('qualifying-condition')?.[0])).toEqual({ valueBoolean: true });
    expect(value(a.get('flow-rate')?.[0])).toEqual({ valueInteger: 2 });
    for (const list of a.values()) {
      for (const answer of list) {
        expect(answer['extension']).toEqual([
          {
            url: INFORMATION_ORIGIN,
            extension: [
              { url: 'source', valueCode: 'auto-client' },
              {
                url: 'author',
                extension: [{ url: 'practitioner', valueReference: { reference: 'Practitioner/pr1' } }],
              },
            ],
          },
        ]);
      }
    }
    expect(result.questionnaireResponse).toMatchObject({
      resourceType: 'QuestionnaireResponse',
      status: 'in-progress',
      subject: { reference: 'Patient/p1' },
      questionnaire: 'http://example.org/dtr/Questionnaire/home-oxygen|1.0.0',
      extension: [
        {
          url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context',
          valueReference: { reference: 'DeviceRequest/o1' },
        },
      ],
    });
    const older = await new PrefillEngine(new BundleReader([patient, order])).run({
      pkg,
      questionnaire,
      patientId: 'p1',
      order: 'DeviceRequest/o1',
      igVersion: '2.1',
    });
    expect(JSON.stringify(older.questionnaireResponse)).toContain('"valueCode":"auto"');
    expect(older.questionnaireResponse['extension']).toEqual([
      {
        url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/context',
        valueReference: { reference: 'DeviceRequest/o1' },
      },
    ]);
  });

  it('reads only the patient, the context and patient-scoped searches of the retrieved types', async () => {
    const other = { ...patient, id: 'p2' };
    const reader = new BundleReader([
      patient,
      other,
      condition('c1', '13645005'),
      condition('c9', '13645005', 'p2'),
      order,
    ]);
    const result = await new PrefillEngine(reader).run({
      pkg,
      questionnaire,
      patientId: 'p1',
      order: 'DeviceRequest/o1',
      igVersion: '2.2',
    });
    expect(reader.searches).toEqual([{ resourceType: 'Condition', params: { patient: 'p1' } }]);
    expect(reader.reads.sort()).toEqual(['DeviceRequest/o1', 'Patient/p1']);
    expect(result.stats).toMatchObject({ searches: 1, resourcesRead: 3 });
    expect(value(answers(result.questionnaireResponse).get('qualifying-condition')?.[0])).toEqual({
      valueBoolean: true,
    });
  });

  it('gives the same answers with and without the engine fast paths', async () => {
    const run = async (fast: boolean) => {
      setEngineFastPaths(fast);
      try {
        const reader = new BundleReader([patient, condition('c1', '13645005'), condition('c2', '38341003'), order]);
        return await new PrefillEngine(reader).run({
          pkg,
          questionnaire,
          patientId: 'p1',
          order: 'DeviceRequest/o1',
          igVersion: '2.2',
          now: new Date('2026-01-01T00:00:00Z'),
        });
      } finally {
        setEngineFastPaths(true);
      }
    };
    const plain = await run(false);
    const fast = await run(true);
    expect(fast.questionnaireResponse).toEqual(plain.questionnaireResponse);
    expect(fast.issues).toEqual(plain.issues);
  });

  it('reports a missing patient as an issue and still returns a QuestionnaireResponse', async () => {
    const result = await new PrefillEngine(new BundleReader([])).run({
      pkg,
      questionnaire,
      patientId: 'ghost',
      igVersion: '2.2',
    });
    expect(result.issues.map((i) => i.code)).toContain('no-patient');
    expect(result.questionnaireResponse['resourceType']).toBe('QuestionnaireResponse');
    expect(result.questionnaireResponse['item']).toEqual([]);
  });

  it('keeps going when a define fails or names nothing: the item is left for the clinician', async () => {
    const broken = structuredClone(questionnaire) as FhirResource & {
      item: Array<{ linkId: string; extension?: Array<{ valueExpression?: { expression?: string } }> }>;
    };
    broken.item.find((i) => i.linkId === 'birth-date')!.extension![0]!.valueExpression!.expression =
      'HomeOxygenExample."No Such Define"';
    const failingReader = new BundleReader([patient, order]);
    failingReader.search = async () => {
      throw new Error('EHR search failed');
    };
    const result = await new PrefillEngine(failingReader).run({
      pkg,
      questionnaire: broken,
      patientId: 'p1',
      igVersion: '2.2',
    });
    const codes = result.issues.map((i) => i.code);
    expect(codes).toEqual(expect.arrayContaining(['unknown-define', 'search-failed']));
    const a = answers(result.questionnaireResponse);
    expect(a.has('birth-date')).toBe(false);
    expect(value(a.get('flow-rate')?.[0])).toEqual({ valueInteger: 2 });
  });
});

describe('PrefillEngine with FHIRPath (SDC)', () => {
  const questionnaire = {
    resourceType: 'Questionnaire',
    url: 'http://example.org/dtr/Questionnaire/fhirpath',
    extension: [
      {
        url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-launchContext',
        extension: [{ url: 'name', valueCoding: { code: 'patient' } }],
      },
      {
        url: 'http://hl7.org/fhir/StructureDefinition/variable',
        valueExpression: {
          name: 'given',
          language: 'text/fhirpath',
          expression: '%patient.name.first().given.first()',
        },
      },
    ],
    item: [
      { linkId: 'family', type: 'string', extension: [fp('initialExpression', '%patient.name.first().family')] },
      { linkId: 'given', type: 'string', extension: [fp('initialExpression', '%given')] },
      { linkId: 'dob', type: 'date', extension: [fp('initialExpression', '%patient.birthDate')] },
      { linkId: 'active', type: 'boolean', extension: [fp('calculatedExpression', '%patient.active')] },
      {
        linkId: 'gender',
        type: 'choice',
        answerOption: [
          { valueCoding: { system: 'http://hl7.org/fhir/administrative-gender', code: 'female', display: 'Female' } },
        ],
        extension: [fp('initialExpression', '%patient.gender')],
      },
      { linkId: 'bad', type: 'string', extension: [fp('initialExpression', '%patient.name.where(')] },
      { linkId: 'note', type: 'display', text: 'Not answered' },
    ],
  };
  function fp(kind: string, expression: string) {
    return {
      url: `http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-${kind}`,
      valueExpression: { language: 'text/fhirpath', expression },
    };
  }

  it('evaluates launch context, variables and item expressions; a broken expression is an issue', async () => {
    const reader = new BundleReader([patient]);
    const result = await new PrefillEngine(reader).run({
      pkg: QuestionnairePackage.fromResources([questionnaire]),
      questionnaire,
      patientId: 'p1',
      igVersion: '2.2',
    });
    const a = answers(result.questionnaireResponse);
    expect(value(a.get('family')?.[0])).toEqual({ valueString: 'Rivera' });
    expect(value(a.get('given')?.[0])).toEqual({ valueString: 'Ana' });
    expect(value(a.get('dob')?.[0])).toEqual({ valueDate: '1950-04-02' });
    expect(value(a.get('active')?.[0])).toEqual({ valueBoolean: true });
    expect(value(a.get('gender')?.[0])).toEqual({
      valueCoding: { system: 'http://hl7.org/fhir/administrative-gender', code: 'female', display: 'Female' },
    });
    expect(a.has('bad')).toBe(false);
    expect(result.issues).toEqual([expect.objectContaining({ code: 'expression-failed', linkId: 'bad' })]);
    expect(reader.searches).toEqual([]);
  });
});

describe('PrefillEngine with enableWhen (SDC)', () => {
  const fp = (expression: string) => ({
    url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
    valueExpression: { language: 'text/fhirpath', expression },
  });
  const questionnaire = {
    resourceType: 'Questionnaire',
    url: 'http://example.org/dtr/Questionnaire/enable-when',
    item: [
      { linkId: 'active', type: 'boolean', extension: [fp('%patient.active')] },
      { linkId: 'gender', type: 'string', extension: [fp('%patient.gender')] },
      {
        linkId: 'when-active',
        type: 'string',
        enableWhen: [{ question: 'active', operator: '=', answerBoolean: true }],
        extension: [fp("'shown'")],
      },
      {
        linkId: 'when-inactive',
        type: 'string',
        enableWhen: [{ question: 'active', operator: '=', answerBoolean: false }],
        extension: [fp("'hidden'")],
      },
      // Depends on a disabled item: disabled too (recomputed until it settles).
      {
        linkId: 'chained',
        type: 'string',
        enableWhen: [{ question: 'when-inactive', operator: 'exists', answerBoolean: true }],
        extension: [fp("'chained'")],
      },
      {
        linkId: 'any-of',
        type: 'string',
        enableBehavior: 'any',
        enableWhen: [
          { question: 'gender', operator: '=', answerString: 'male' },
          { question: 'active', operator: '=', answerBoolean: true },
        ],
        extension: [fp("'any'")],
      },
      {
        linkId: 'by-expression',
        type: 'string',
        extension: [
          fp("'expr'"),
          {
            url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-enableWhenExpression',
            valueExpression: {
              language: 'text/fhirpath',
              expression: "%resource.item.where(linkId = 'gender').answer.value = 'male'",
            },
          },
        ],
      },
    ],
  };

  it('leaves out the items the answers disable, following chains, any/all and enableWhenExpression', async () => {
    const result = await new PrefillEngine(new BundleReader([patient])).run({
      pkg: QuestionnairePackage.fromResources([questionnaire]),
      questionnaire,
      patientId: 'p1',
      igVersion: '2.2',
    });
    const a = answers(result.questionnaireResponse);
    expect([...a.keys()].sort()).toEqual(['active', 'any-of', 'gender', 'when-active']);
    expect(result.issues).toEqual([]);

    const male = { ...patient, gender: 'male', active: false };
    const other = await new PrefillEngine(new BundleReader([male])).run({
      pkg: QuestionnairePackage.fromResources([questionnaire]),
      questionnaire,
      patientId: 'p1',
      igVersion: '2.2',
    });
    expect([...answers(other.questionnaireResponse).keys()].sort()).toEqual([
      'active',
      'any-of',
      'by-expression',
      'chained',
      'gender',
      'when-inactive',
    ]);
  });
});
