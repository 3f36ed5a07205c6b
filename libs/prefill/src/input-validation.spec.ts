import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { corpusPath, haveCorpus, NEEDS_CORPUS } from '../../../test/support/corpus.js';
import { invalidResourceIssue, resourceShapeProblems, screenResource } from './input-validation.js';
import { BundleReader } from './patient-data-reader.js';
import { PrefillEngine } from './prefill.engine.js';

const r = (resource: Record<string, unknown>) => resource as FhirResource;

describe('resourceShapeProblems: the FHIR 4.0.1 model shape (cql-exec-fhir model info)', () => {
  it('finds an object where the model has a list, and a list where it has a single value', () => {
    expect(
      resourceShapeProblems(
        r({
          resourceType: 'Condition',
          id: '123',
          code: { coding: { system: 'http://snomed.info/sct', code: '389087006' } },
        }),
      ),
    ).toEqual(['code.coding must be an array']);
    expect(
      resourceShapeProblems(r({ resourceType: 'Patient', id: 'p', gender: ['female'], name: { family: 'Rivera' } })),
    ).toEqual(['gender must be a single value, not an array', 'name must be an array']);
  });

  it('finds a primitive where a complex type belongs, and a complex value where a primitive belongs', () => {
    expect(resourceShapeProblems(r({ resourceType: 'Observation', id: 'o', status: 'final', code: '2708-6' }))).toEqual(
      ['code must be an object (CodeableConcept), not a string'],
    );
    expect(resourceShapeProblems(r({ resourceType: 'Patient', id: 'p', birthDate: { value: '1948-07-09' } }))).toEqual([
      'birthDate must be a string, not an object',
    ]);
  });

  it('checks the JSON kind of primitives, inherited ones included (positiveInt is an integer, code a string)', () => {
    expect(
      resourceShapeProblems(
        r({
          resourceType: 'Patient',
          id: 'p',
          birthDate: 19480709,
          active: 'yes',
          telecom: [{ system: 'phone', value: '555', rank: '1' }],
        }),
      ),
    ).toEqual([
      'birthDate must be a string, not a number',
      'active must be a boolean, not a string',
      'telecom[0].rank must be a number, not a string',
    ]);
  });

  it('knows choice elements, backbone elements, inherited elements and contained resources', () => {
    expect(
      resourceShapeProblems(
        r({
          resourceType: 'Observation',
          id: 'o',
          status: 'final',
          code: { coding: [{ code: 'x' }] },
          valueQuantity: { value: '5', unit: 'mg' },
          component: [{ code: { coding: [{ code: 'y' }] }, valueString: 3 }],
        }),
      ),
    ).toEqual([
      'valueQuantity.value must be a number, not a string',
      'component[0].valueString must be a string, not a number',
    ]);
    expect(
      resourceShapeProblems(
        r({
          resourceType: 'Condition',
          id: 'c',
          meta: { profile: 'http://x' },
          extension: { url: 'http://x', valueBoolean: true },
        }),
      ),
    ).toEqual(['meta.profile must be an array', 'extension must be an array']);
    expect(
      resourceShapeProblems(
        r({
          resourceType: 'MedicationRequest',
          id: 'm',
          contained: [{ resourceType: 'Medication', id: 'med', code: { coding: { code: '1' } } }],
        }),
      ),
    ).toEqual(['contained[0].code.coding must be an array']);
  });

  it('accepts well-formed resources, primitive extensions (_birthDate), nulls beside them, and elements it does not know', () => {
    expect(
      resourceShapeProblems(
        r({
          resourceType: 'Patient',
          id: 'p',
          meta: { profile: ['http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient'] },
          birthDate: '1948-07-09',
          _birthDate: { extension: [{ url: 'http://x', valueString: 'approx' }] },
          name: [{ family: 'Okafor', given: ['Grace', null], _given: [null, { extension: [] }] }],
          telecom: [{ system: 'phone', value: '555', rank: 1 }],
          deceasedBoolean: false,
          multipleBirthInteger: 2,
          somethingNewer: { any: 'shape' },
        }),
      ),
    ).toEqual([]);
    expect(resourceShapeProblems(r({ resourceType: 'NotAFhirType', id: 'x', code: 5 }))).toEqual([]);
  });

  it('names the resource in the issue and stops after a few problems', () => {
    expect(invalidResourceIssue(r({ resourceType: 'Condition', id: '123', code: { coding: { code: '1' } } }))).toEqual({
      severity: 'warning',
      code: 'invalid-resource',
      message: 'Condition/123: code.coding must be an array; left out of evaluation',
    });
    const many = invalidResourceIssue(
      r({ resourceType: 'Condition', id: 'c', identifier: {}, category: {}, bodySite: {}, note: {}, evidence: {} }),
    )!;
    expect(many.message.split(';').length).toBe(4); // three problems, then "left out of evaluation"
    expect(
      invalidResourceIssue(r({ resourceType: 'Condition', id: 'ok', code: { coding: [{ code: '1' }] } })),
    ).toBeUndefined();
  });

  it('keeps a malformed Patient (nothing could be evaluated without it) minus its malformed elements', () => {
    const patient = r({
      resourceType: 'Patient',
      id: 'p',
      birthDate: '1948-07-09',
      name: { family: 'Okafor' },
      telecom: [{ rank: '1' }],
      gender: 'female',
    });
    const { resource, issue } = screenResource(patient);
    expect(resource).toEqual({ resourceType: 'Patient', id: 'p', birthDate: '1948-07-09', gender: 'female' });
    expect(issue).toEqual({
      severity: 'warning',
      code: 'invalid-resource',
      message:
        'Patient/p: name must be an array; telecom[0].rank must be a number, not a string; evaluated without name, telecom',
    });
    expect(screenResource(patient).resource).toBe(resource);
  });
});

// Our own fixture package (CQL compiled to ELM by scripts/compile-cql.mjs): "Has Qualifying Condition" over [Condition].
const FIXTURE = path.resolve(import.meta.dirname, '../../../apps/sandbox/fixtures/packages/home-oxygen-example');
const fixtureResources = readdirSync(FIXTURE)
  .filter((f) => f.endsWith('.json') && f !== 'rules.json')
  .map((f) => JSON.parse(readFileSync(path.join(FIXTURE, f), 'utf8')) as FhirResource);

describe('the engine leaves invalid resources out of evaluation', () => {
  const pkg = QuestionnairePackage.fromResources(fixtureResources);
  const questionnaire = pkg.questionnaires[0]!;
  const patient = { resourceType: 'Patient', id: 'p1', birthDate: '1950-04-02', name: [{ family: 'Rivera' }] };
  const answerOf = (qr: FhirResource, linkId: string) =>
    ((qr['item'] as Array<{ linkId: string; answer?: Array<Record<string, unknown>> }>).find((i) => i.linkId === linkId)
      ?.answer ?? [])[0];

  it('a qualifying Condition whose coding is not a list does not count, and the response says why', async () => {
    const broken = {
      resourceType: 'Condition',
      id: 'c-broken',
      subject: { reference: 'Patient/p1' },
      code: { coding: { system: 'http://snomed.info/sct', code: '389087006' } },
    };
    const result = await new PrefillEngine(new BundleReader([patient, broken].map(r))).run({
      pkg,
      questionnaire,
      patientId: 'p1',
      igVersion: '2.2',
    });
    expect(answerOf(result.questionnaireResponse, 'qualifying-condition')).toMatchObject({ valueBoolean: false });
    // The issue names the item whose answer the left-out resource may change.
    expect(result.issues).toContainEqual({
      severity: 'warning',
      code: 'invalid-resource',
      message:
        'Condition/c-broken: code.coding must be an array; left out of evaluation; answers it may change: qualifying-condition',
      linkId: 'qualifying-condition',
    });
    expect(result.issues.filter((i) => i.code === 'invalid-resource')).toHaveLength(1);
    expect(result.stats.resourcesRead).toBe(1);

    // The same Condition, well formed: it counts, and nothing is reported.
    const fixed = { ...broken, code: { coding: [broken.code.coding] } };
    const ok = await new PrefillEngine(new BundleReader([patient, fixed].map(r))).run({
      pkg,
      questionnaire,
      patientId: 'p1',
      igVersion: '2.2',
    });
    expect(answerOf(ok.questionnaireResponse, 'qualifying-condition')).toMatchObject({ valueBoolean: true });
    expect(ok.issues.filter((i) => i.code === 'invalid-resource')).toEqual([]);
  });

  it('a malformed Patient still gets its well-formed answers, alone and in a session of questionnaires', async () => {
    const malformed = { ...patient, name: { family: 'Rivera' } };
    const condition = {
      resourceType: 'Condition',
      id: 'c1',
      subject: { reference: 'Patient/p1' },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '389087006' }] },
    };
    const reader = new BundleReader([malformed, condition].map(r));
    const alone = await new PrefillEngine(reader).run({ pkg, questionnaire, patientId: 'p1', igVersion: '2.2' });
    const [together] = await new PrefillEngine(reader).runAll({
      pkg,
      questionnaires: [questionnaire],
      patientId: 'p1',
      igVersion: '2.2',
    });
    for (const result of [alone, together!]) {
      expect(answerOf(result.questionnaireResponse, 'birth-date')).toMatchObject({ valueDate: '1950-04-02' });
      expect(answerOf(result.questionnaireResponse, 'qualifying-condition')).toMatchObject({ valueBoolean: true });
      expect(result.issues).toContainEqual({
        severity: 'warning',
        code: 'invalid-resource',
        message: 'Patient/p1: name must be an array; evaluated without name; answers it may change: birth-date',
        linkId: 'birth-date',
      });
    }
  });
});

const corpus = corpusPath('patients');

describe.skipIf(!haveCorpus)(`valid patients of the corpus give no issue ${NEEDS_CORPUS}`, () => {
  it('every resource of every corpus patient fits the model, except the one the corpus gets wrong', () => {
    const found: string[] = [];
    let count = 0;
    for (const file of readdirSync(corpus).filter((f) => f.endsWith('.json'))) {
      const bundle = JSON.parse(readFileSync(path.join(corpus, file), 'utf8')) as {
        entry?: Array<{ resource?: FhirResource }>;
      };
      for (const resource of (bundle.entry ?? []).map((e) => e.resource).filter((x): x is FhirResource => Boolean(x))) {
        count++;
        const issue = invalidResourceIssue(resource);
        if (issue) found.push(`${file}: ${issue.message}`);
      }
    }
    expect(count).toBeGreaterThan(500);
    // Observation.interpretation is 0..* CodeableConcept in R4; this test EHR export sends one object.
    expect(found).toEqual([
      'testehr-pat014-teddy.json: Observation/obs014-fev1-fvc-ratio: interpretation must be an array; left out of evaluation',
    ]);
  });
});
