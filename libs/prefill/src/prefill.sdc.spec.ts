import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { BundleReader } from './patient-data-reader.js';
import { type PrefillResult, PrefillEngine } from './prefill.engine.js';

// Our own fixture: a package exercising every SDC population feature, and a made-up patient.
const fixtures = path.resolve(import.meta.dirname, '../../../apps/sandbox/fixtures');
const packageDir = path.join(fixtures, 'packages/sdc-features-example');
const resources = readdirSync(packageDir)
  .filter((f) => f.endsWith('.json') && f !== 'rules.json')
  .map((f) => JSON.parse(readFileSync(path.join(packageDir, f), 'utf8')) as FhirResource);
const pkg = QuestionnairePackage.fromResources(resources);
const questionnaire = pkg.questionnaires[0]!;
const bundle = JSON.parse(readFileSync(path.join(fixtures, 'patients/sdc-grace-okafor.json'), 'utf8')) as {
  entry: Array<{ resource: FhirResource }>;
};
const NOW = new Date('2026-11-22T12:00:00Z');

async function prefill(
  options: {
    bundle?: typeof bundle;
    questionnaire?: FhirResource;
    pkg?: QuestionnairePackage;
    igVersion?: '2.1' | '2.2';
  } = {},
): Promise<PrefillResult> {
  const reader = BundleReader.fromBundle(options.bundle ?? bundle);
  return new PrefillEngine(reader).run({
    pkg: options.pkg ?? pkg,
    questionnaire: options.questionnaire ?? questionnaire,
    patientId: 'sdc-grace',
    order: 'DeviceRequest/sdc-dr1',
    coverage: 'Coverage/sdc-cov1',
    igVersion: options.igVersion ?? '2.2',
    now: NOW,
  });
}

type Item = { linkId: string; answer?: Array<Record<string, unknown>>; item?: Item[] };
/** Every response item with this linkId (repeating groups give several), answers without their origin extension. */
function itemsOf(result: PrefillResult, linkId: string): Item[] {
  const found: Item[] = [];
  const walk = (items: Item[] = []) => {
    for (const item of items) {
      if (item.linkId === linkId) found.push(item);
      walk(item.item);
    }
  };
  walk(result.questionnaireResponse['item'] as Item[]);
  return found;
}
const answers = (result: PrefillResult, linkId: string) =>
  itemsOf(result, linkId).flatMap((i) => (i.answer ?? []).map(({ extension: _e, ...a }) => a));

/** The questionnaire with one item's expression replaced. */
function withExpression(linkId: string, kind: string, language: string, expression: string): FhirResource {
  const copy = structuredClone(questionnaire) as FhirResource & { item: Item[] };
  const walk = (
    items: Array<
      Item & { extension?: Array<{ url: string; valueExpression?: { language: string; expression: string } }> }
    >,
  ) => {
    for (const item of items) {
      if (item.linkId === linkId) {
        const ext = item.extension!.find((e) => e.url.endsWith(kind))!;
        ext.valueExpression = { ...ext.valueExpression!, language, expression };
      }
      walk((item.item ?? []) as typeof items);
    }
  };
  walk(copy.item as Parameters<typeof walk>[0]);
  return copy;
}

describe('SDC population on our fixture package (sdc-features-example)', () => {
  it('the fixture library carries exactly the committed CQL and its compiled ELM', () => {
    const library = pkg.libraries[0]!;
    expect(library.cql).toBe(readFileSync(path.join(fixtures, 'cql/SdcFeaturesExample.cql'), 'utf8'));
    expect(library.elm).toEqual(JSON.parse(readFileSync(path.join(fixtures, 'cql/SdcFeaturesExample.json'), 'utf8')));
  });

  it('answers from every kind of expression without an issue, each answer tagged with its origin', async () => {
    const result = await prefill();
    expect(result.issues).toEqual([]);
    const all: Array<Record<string, unknown>> = [];
    const walk = (items: Item[] = []) => items.forEach((i) => (all.push(...(i.answer ?? [])), walk(i.item)));
    walk(result.questionnaireResponse['item'] as Item[]);
    expect(all.length).toBeGreaterThanOrEqual(18);
    for (const answer of all) expect(JSON.stringify(answer['extension'])).toContain('"valueCode":"auto-client"');
    const older = await prefill({ igVersion: '2.1' });
    expect(JSON.stringify(older.questionnaireResponse['item'])).not.toContain('auto-client');
    expect(JSON.stringify(older.questionnaireResponse['item'])).toContain('"valueCode":"auto"');
  });

  it('initialExpression in FHIRPath with launchContext %patient and a root variable', async () => {
    // The root variable picks the official name, not the nickname listed first.
    expect(answers(await prefill(), 'patient-name')).toEqual([{ valueString: 'Okafor' }]);
  });

  it('initialExpression in text/cql ("Lib"."Define"): a System Date becomes valueDate', async () => {
    expect(answers(await prefill(), 'birth-date')).toEqual([{ valueDate: '1948-07-09' }]);
  });

  it('text/cql-identifier naming a define with spaces: a System Code becomes the matching answerOption Coding', async () => {
    expect(answers(await prefill(), 'gender')).toEqual([
      { valueCoding: { system: 'http://hl7.org/fhir/administrative-gender', code: 'female', display: 'Female' } },
    ]);
  });

  it('legacy cqf-expression populates like initialExpression', async () => {
    expect(answers(await prefill(), 'has-copd')).toEqual([{ valueBoolean: true }]);
  });

  it('candidateExpression offers the CodeableConcepts as Coding options and does not answer the item', async () => {
    const result = await prefill();
    expect(result.options['diagnosis']).toEqual([
      {
        valueCoding: {
          system: 'http://hl7.org/fhir/sid/icd-10-cm',
          code: 'J44.9',
          display: 'Chronic obstructive pulmonary disease, unspecified',
        },
      },
      { valueCoding: { system: 'http://snomed.info/sct', code: '44054006', display: 'Diabetes mellitus type 2' } },
    ]);
    expect(itemsOf(result, 'diagnosis')).toEqual([]);
  });

  it('contextExpression gives the resources behind an item; a Quantity keeps its unit and system', async () => {
    const result = await prefill();
    expect((result.answerContext['spo2-latest'] as FhirResource[]).map((o) => `${o.resourceType}/${o.id}`)).toEqual([
      'Observation/sdc-spo2-1',
      'Observation/sdc-spo2-2',
    ]);
    expect(answers(result, 'spo2-latest')).toEqual([
      { valueQuantity: { value: 87, unit: '%', system: 'http://unitsofmeasure.org', code: '%' } },
    ]);
    expect(answers(result, 'spo2-issued')).toEqual([{ valueDateTime: '2026-11-02T10:05:00+00:00' }]);
  });

  it('itemPopulationContext repeats the group once per context value, its items reading %reading', async () => {
    const groups = itemsOf(await prefill(), 'spo2-readings');
    expect(groups).toHaveLength(2);
    expect(groups.map((g) => g.item!.map((i) => (i.answer ?? []).map(({ extension: _e, ...a }) => a)[0]))).toEqual([
      [{ valueDecimal: 91 }, { valueDateTime: '2026-10-01T09:30:00Z' }],
      [{ valueDecimal: 87 }, { valueDateTime: '2026-11-02T10:00:00Z' }],
    ]);
  });

  it('calculatedExpression with item variables over %resource follows the answers it reads', async () => {
    expect(answers(await prefill(), 'bmi')).toEqual([{ valueDecimal: 27.3 }]);
    const heavier = structuredClone(bundle);
    const weight = heavier.entry.find((e) => e.resource.id === 'sdc-weight')!.resource as unknown as {
      valueQuantity: { value: number };
    };
    weight.valueQuantity.value = 81;
    expect(answers(await prefill({ bundle: heavier }), 'bmi')).toEqual([{ valueDecimal: 31.6 }]);
    // Without a height nothing can be calculated: no answer, no error.
    const noHeight = { ...bundle, entry: bundle.entry.filter((e) => e.resource.id !== 'sdc-height') };
    const result = await prefill({ bundle: noHeight });
    expect(itemsOf(result, 'bmi')).toEqual([]);
    expect(result.issues).toEqual([]);
  });

  it('calculatedExpressions that feed each other forever are reported as a cycle, and the prefill still finishes', async () => {
    const cyclic = {
      resourceType: 'Questionnaire',
      url: 'http://example.org/dtr/Questionnaire/cycle',
      item: ['a', 'b'].map((linkId, i) => ({
        linkId,
        type: 'integer',
        extension: [
          {
            url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression',
            valueExpression: {
              language: 'text/fhirpath',
              expression: `(%resource.repeat(item).where(linkId='${i === 0 ? 'b' : 'a'}').answer.value | 0).first() + 1`,
            },
          },
        ],
      })),
    } as unknown as FhirResource;
    const result = await prefill({ questionnaire: cyclic, pkg: QuestionnairePackage.fromResources([cyclic]) });
    expect(result.issues.map((i) => i.code)).toContain('calculation-cycle');
    expect(result.questionnaireResponse['resourceType']).toBe('QuestionnaireResponse');
  });

  it('a Reference and an Attachment from CQL (the order parameter bound by its type)', async () => {
    const result = await prefill();
    expect(answers(result, 'orderer')).toEqual([{ valueReference: { reference: 'Practitioner/sdc-pr1' } }]);
    expect(answers(result, 'consent')).toEqual([
      {
        valueAttachment: {
          contentType: 'application/pdf',
          url: 'https://ehr.example.org/docs/consent-sdc-grace.pdf',
          title: 'Home oxygen consent',
        },
      },
    ]);
  });

  it('inline application/elm+json is evaluated at the prefill time', async () => {
    expect(answers(await prefill(), 'next-review')).toEqual([{ valueDate: '2026-12-22' }]);
  });

  it('inline text/cql-expression is compiled with the questionnaire libraries included', async () => {
    expect(answers(await prefill(), 'copd-summary')).toEqual([{ valueString: 'COPD on record' }]);
  });

  it('enableWhen and enableWhenExpression follow the answers: without COPD the follow-up is gone and the reason asked', async () => {
    const withCopd = await prefill();
    expect(answers(withCopd, 'copd-followup')).toEqual([{ valueBoolean: true }]);
    expect(itemsOf(withCopd, 'no-copd-reason')).toEqual([]);
    const noCopd = { ...bundle, entry: bundle.entry.filter((e) => e.resource.id !== 'sdc-c1') };
    const result = await prefill({ bundle: noCopd });
    expect(answers(result, 'has-copd')).toEqual([{ valueBoolean: false }]);
    expect(answers(result, 'copd-summary')).toEqual([{ valueString: 'No COPD on record' }]);
    expect(itemsOf(result, 'copd-followup')).toEqual([]);
    expect(answers(result, 'no-copd-reason')).toEqual([{ valueString: 'Reason to be given by the clinician' }]);
    expect(result.options['diagnosis']).toHaveLength(1);
  });

  it('a broken expression of any language is an issue naming its item, and every other item is still answered', async () => {
    const cases: Array<[string, string, string, string]> = [
      ['copd-summary', 'initialExpression', 'text/cql-expression', 'if "SdcFeaturesExample"."No Such Define" then 1'],
      ['next-review', 'initialExpression', 'application/elm+json', '{"library": {"statements": {"def": []}}}'],
      ['spo2-readings', 'itemPopulationContext', 'text/fhirpath', '%patient.where('],
      ['bmi', 'calculatedExpression', 'text/fhirpath', '(%w / '],
      ['diagnosis', 'candidateExpression', 'text/cql', '"SdcFeaturesExample"."No Such Define"'],
    ];
    const healthy = await prefill();
    for (const [linkId, kind, language, expression] of cases) {
      const result = await prefill({ questionnaire: withExpression(linkId, kind, language, expression) });
      const issue = result.issues.find((i) => i.linkId === linkId);
      expect(issue, `${linkId} (${language})`).toMatchObject({ severity: 'warning' });
      expect(['expression-failed', 'unknown-define']).toContain(issue!.code);
      expect(answers(result, 'birth-date'), linkId).toEqual(answers(healthy, 'birth-date'));
      expect(answers(result, 'spo2-latest'), linkId).toEqual(answers(healthy, 'spo2-latest'));
    }
  });
});
