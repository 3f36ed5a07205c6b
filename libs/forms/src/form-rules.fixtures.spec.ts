import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { BundleReader, PrefillEngine } from '@dtr/prefill';
import { describe, expect, it } from 'vitest';
import { completionProblems, reviseResponse } from './form-rules.js';
import type { FormDefinition, ResponseMeta } from './form.types.js';
import { answer, DR_LEE, editable, originsOf, valuesOf } from './test-forms.js';

// Our sandbox fixture packages, prefilled by the real engine for the sandbox's made-up patient.
const fixtures = path.resolve(import.meta.dirname, '../../../apps/sandbox/fixtures');
const bundle = JSON.parse(readFileSync(path.join(fixtures, 'patients/sdc-grace-okafor.json'), 'utf8')) as {
  entry: Array<{ resource: FhirResource }>;
};
const patient = bundle.entry.map((e) => e.resource).find((r) => r.resourceType === 'Patient')!;

async function formOf(name: string): Promise<FormDefinition> {
  const dir = path.join(fixtures, 'packages', name);
  const resources = readdirSync(dir)
    .filter((f) => f.endsWith('.json') && f !== 'rules.json')
    .map((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as FhirResource);
  const pkg = QuestionnairePackage.fromResources(resources);
  const questionnaire = pkg.questionnaires[0]!;
  const result = await new PrefillEngine(BundleReader.fromBundle(bundle)).run({
    pkg,
    questionnaire,
    patientId: 'sdc-grace',
    order: 'DeviceRequest/sdc-dr1',
    igVersion: '2.2',
    now: new Date('2026-11-22T12:00:00Z'),
  });
  return {
    questionnaire,
    valueSets: pkg.valueSets,
    igVersion: '2.2',
    prefill: result.questionnaireResponse,
    context: { patient },
    options: result.options,
  };
}

const metaFor = (form: FormDefinition): ResponseMeta => ({
  subject: 'Patient/sdc-grace',
  author: DR_LEE,
  authored: '2026-12-05T10:00:00Z',
  orders: ['DeviceRequest/sdc-dr1'],
  coverage: ['Coverage/sdc-cov1'],
  questionnaireCanonical: `${form.questionnaire['url']}|${form.questionnaire['version']}`,
});

function save(form: FormDefinition, page: unknown, previous?: FhirResource) {
  const result = reviseResponse(form, page, previous, DR_LEE, metaFor(form));
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result;
}

describe('sdc-features-example, prefilled for the sandbox patient', () => {
  it('the prefill sent back untouched is stored as it is: every answer auto-client, nothing dropped', async () => {
    const form = await formOf('sdc-features-example');
    const { response, dropped } = save(form, editable(form.prefill));
    expect(dropped).toEqual([]);
    expect(valuesOf(response, 'bmi')).toEqual([{ valueDecimal: 27.3 }]);
    expect(valuesOf(response, 'reading-value')).toEqual([{ valueDecimal: 91 }, { valueDecimal: 87 }]);
    const sources = new Set(
      ['patient-name', 'gender', 'spo2-latest', 'reading-value', 'orderer', 'consent', 'copd-followup'].flatMap((l) =>
        originsOf(response, l).map((o) => o.source),
      ),
    );
    expect([...sources]).toEqual(['auto-client']);
  });

  it('a new weight recomputes the body mass index (variables %w and %h), as the app’s value', async () => {
    const form = await formOf('sdc-features-example');
    const page = editable(form.prefill);
    answer(page, 'weight-kg', [{ valueDecimal: 85 }]);
    const { response } = save(form, page);
    expect(valuesOf(response, 'bmi')).toEqual([{ valueDecimal: 33.2 }]);
    expect(originsOf(response, 'bmi')).toEqual([{ source: 'auto-client', author: undefined }]);
    expect(originsOf(response, 'weight-kg')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
  });

  it('"no COPD" asks why (enableWhenExpression) and drops the COPD follow-up (enableWhen)', async () => {
    const form = await formOf('sdc-features-example');
    const page = editable(form.prefill);
    answer(page, 'has-copd', [{ valueBoolean: false }]);
    answer(page, 'no-copd-reason', [{ valueString: 'Post-surgical hypoxaemia' }]);
    const { response, dropped } = save(form, page);
    expect(valuesOf(response, 'no-copd-reason')).toEqual([{ valueString: 'Post-surgical hypoxaemia' }]);
    expect(dropped).toEqual(['copd-followup']);
    expect(valuesOf(response, 'copd-followup')).toEqual([]);
  });

  it('while COPD is on record, a reason for "no COPD" is not asked and is dropped', async () => {
    const form = await formOf('sdc-features-example');
    const page = editable(form.prefill);
    answer(page, 'no-copd-reason', [{ valueString: 'typed anyway' }]);
    const { response, dropped } = save(form, page);
    expect(dropped).toEqual(['no-copd-reason']);
    expect(valuesOf(response, 'no-copd-reason')).toEqual([]);
  });

  it('a diagnosis must be one the EHR offered (candidateExpression)', async () => {
    const form = await formOf('sdc-features-example');
    const offered = editable(form.prefill);
    answer(offered, 'diagnosis', [{ valueCoding: { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'J44.9' } }]);
    expect(valuesOf(save(form, offered).response, 'diagnosis')).toEqual([
      {
        valueCoding: {
          system: 'http://hl7.org/fhir/sid/icd-10-cm',
          code: 'J44.9',
          display: 'Chronic obstructive pulmonary disease, unspecified',
        },
      },
    ]);
    const other = editable(form.prefill);
    answer(other, 'diagnosis', [{ valueCoding: { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'Z00.0' } }]);
    const refused = reviseResponse(form, other, undefined, DR_LEE, metaFor(form));
    expect(refused).toEqual({
      ok: false,
      problems: [expect.objectContaining({ linkId: 'diagnosis', code: 'not-in-answer-set' })],
    });
  });

  it('a changed body mass index is refused', async () => {
    const form = await formOf('sdc-features-example');
    const page = editable(form.prefill);
    answer(page, 'bmi', [{ valueDecimal: 22 }]);
    const result = reviseResponse(form, page, undefined, DR_LEE, metaFor(form));
    expect(result).toEqual({
      ok: false,
      problems: [expect.objectContaining({ linkId: 'bmi', code: 'calculated-changed' })],
    });
  });
});

describe('home-oxygen-example, prefilled for the sandbox patient', () => {
  it('the delivery system must come from the package value set; one of its codes completes the form', async () => {
    const form = await formOf('home-oxygen-example');
    const wrong = editable(form.prefill);
    answer(wrong, 'delivery-system', [
      { valueCoding: { system: 'http://example.org/dtr/CodeSystem/oxygen-delivery', code: 'tent' } },
    ]);
    const refused = reviseResponse(form, wrong, undefined, DR_LEE, metaFor(form));
    expect(refused.ok).toBe(false);
    if (!refused.ok)
      expect(refused.problems[0]!.message).toBe(
        '"Oxygen delivery system": the answer is not one of the listed choices',
      );
    const right = editable(form.prefill);
    answer(right, 'delivery-system', [
      { valueCoding: { system: 'http://example.org/dtr/CodeSystem/oxygen-delivery', code: 'liquid' } },
    ]);
    answer(right, 'flow-rate', [{ valueInteger: 3 }]);
    const { response } = save(form, right);
    expect(originsOf(response, 'delivery-system')).toEqual([{ source: 'manual', author: 'Practitioner/dr-lee' }]);
    expect(originsOf(response, 'flow-rate')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
    expect(originsOf(response, 'birth-date')).toEqual([{ source: 'auto-client', author: undefined }]);
    expect(completionProblems(form, response)).toEqual([]);
  });
});
