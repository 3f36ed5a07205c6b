import type { FhirResource } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { answerOrigins, completionProblems, reviseResponse } from './form-rules.js';
import type { FormProblem } from './form.types.js';
import {
  answer,
  DR_LEE,
  editable,
  formFor,
  META,
  origin,
  originsOf,
  pageCopy,
  QUESTIONNAIRE,
  valuesOf,
} from './test-forms.js';

function saved(submitted: unknown, previous?: FhirResource, version: '2.0.1' | '2.1' | '2.2' = '2.2') {
  const result = reviseResponse(formFor(version), submitted, previous, DR_LEE, META);
  if (!result.ok) throw new Error(`refused: ${JSON.stringify(result.problems)}`);
  return result;
}

function refused(submitted: unknown, previous?: FhirResource): FormProblem[] {
  const result = reviseResponse(formFor(), submitted, previous, DR_LEE, META);
  if (result.ok) throw new Error('the save was accepted');
  return result.problems;
}

describe('where each answer came from (information-origin)', () => {
  it('a prefilled answer the clinician left alone stays auto-client, with no author', () => {
    const { response } = saved(pageCopy());
    expect(originsOf(response, 'name')).toEqual([{ source: 'auto-client', author: undefined }]);
    expect(originsOf(response, 'height')).toEqual([{ source: 'auto-client', author: undefined }]);
  });

  it('a changed prefilled answer becomes override and a new one manual, both with the signed-in practitioner', () => {
    const page = pageCopy();
    answer(page, 'name', [{ valueString: 'Ann Lee-Smith' }]);
    answer(page, 'smoker', [{ valueBoolean: false }]);
    const { response } = saved(page);
    expect(originsOf(response, 'name')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
    expect(originsOf(response, 'smoker')).toEqual([{ source: 'manual', author: 'Practitioner/dr-lee' }]);
  });

  it('2.0.1 and 2.1 payers get `auto` instead of auto-client, and the same override/manual', () => {
    for (const version of ['2.0.1', '2.1'] as const) {
      const page = pageCopy(version);
      answer(page, 'name', [{ valueString: 'A. Lee' }]);
      const { response } = saved(page, undefined, version);
      expect(originsOf(response, 'mrn')).toEqual([{ source: 'auto', author: undefined }]);
      expect(originsOf(response, 'name')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
    }
  });

  it('ignores the origin and the status the page claims', () => {
    const page = pageCopy();
    page['status'] = 'completed';
    answer(page, 'name', [
      {
        valueString: 'Someone Else',
        extension: [
          {
            url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/information-origin',
            extension: [{ url: 'source', valueCode: 'auto-client' }],
          },
        ],
      },
    ]);
    const { response } = saved(page);
    expect(response['status']).toBe('in-progress');
    expect(originsOf(response, 'name')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
  });

  it('an answer unchanged since the last save keeps the origin and the author it was saved with', () => {
    const first = pageCopy();
    answer(first, 'notes', [{ valueString: 'Walks 100 m' }]);
    const previous = reviseResponse(formFor(), first, undefined, { practitioner: 'Practitioner/dr-kim' }, META);
    if (!previous.ok) throw new Error('first save refused');
    const second = editable(previous.response);
    answer(second, 'smoker', [{ valueBoolean: true }]);
    answer(second, 'packs', [{ valueInteger: 1 }]);
    const { response } = saved(second, previous.response);
    expect(originsOf(response, 'notes')).toEqual([{ source: 'manual', author: 'Practitioner/dr-kim' }]);
    expect(originsOf(response, 'packs')).toEqual([{ source: 'manual', author: 'Practitioner/dr-lee' }]);
  });

  it('a changed answer that was saved as an override stays an override, now by the new author (spec-137)', () => {
    const previous: FhirResource = {
      resourceType: 'QuestionnaireResponse',
      item: [
        { linkId: 'notes', answer: [{ valueString: 'first', extension: [origin('override', 'Practitioner/dr-kim')] }] },
      ],
    };
    const page = pageCopy();
    answer(page, 'notes', [{ valueString: 'second' }]);
    expect(originsOf(saved(page, previous).response, 'notes')).toEqual([
      { source: 'override', author: 'Practitioner/dr-lee' },
    ]);
  });

  it('an answer put back to the prefilled value is auto-client again', () => {
    const page = pageCopy();
    answer(page, 'name', [{ valueString: 'Changed' }]);
    const first = saved(page).response;
    const back = pageCopy();
    const { response } = saved(back, first);
    expect(originsOf(response, 'name')).toEqual([{ source: 'auto-client', author: undefined }]);
  });

  it('answerOrigins lists each answer with its origin and author', () => {
    const page = pageCopy();
    answer(page, 'smoker', [{ valueBoolean: false }]);
    const origins = answerOrigins(saved(page).response);
    expect(origins).toContainEqual({ linkId: 'name', origin: 'auto-client' });
    expect(origins).toContainEqual({
      linkId: 'smoker',
      origin: 'manual',
      author: { practitioner: 'Practitioner/dr-lee', display: 'Dr Lee' },
    });
  });
});

describe('refused answers, each named after what the clinician sees', () => {
  const cases: Array<[string, string, unknown[], FormProblem['code']]> = [
    ['a whole number field given 1.5', 'packs', [{ valueInteger: 1.5 }], 'wrong-type'],
    ['a yes/no field given the text "yes"', 'smoker', [{ valueString: 'yes' }], 'wrong-type'],
    ['a date that does not exist (30 February)', 'dob', [{ valueDate: '2024-02-30' }], 'wrong-type'],
    ['a date and time without a time zone', 'seen', [{ valueDateTime: '2024-02-03T10:00:00' }], 'wrong-type'],
    ['a time of 25 o’clock', 'dose-time', [{ valueTime: '25:00:00' }], 'wrong-type'],
    ['a web address that runs script', 'site', [{ valueUri: 'javascript:alert(1)' }], 'wrong-type'],
    ['a number field given text', 'weight', [{ valueDecimal: '12' }], 'wrong-type'],
    ['a text field given a number', 'notes', [{ valueInteger: 3 }], 'wrong-type'],
    ['an answer with two values', 'notes', [{ valueString: 'a', valueInteger: 1 }], 'wrong-type'],
    [
      'a route that is not among the listed choices',
      'route',
      [{ valueCoding: { system: 'http://example.org/route', code: 'iv' } }],
      'not-in-answer-set',
    ],
    [
      'a severity outside the contained value set',
      'severity',
      [{ valueCoding: { system: 'http://example.org/severity', code: 'moderate' } }],
      'not-in-answer-set',
    ],
    [
      'a device outside the package value set',
      'device',
      [{ valueCoding: { system: 'http://example.org/device', code: 'tent' } }],
      'not-in-answer-set',
    ],
    ['a shift that is not a listed text choice', 'shift', [{ valueString: 'evening' }], 'not-in-answer-set'],
    ['a name longer than the 20 characters allowed', 'name', [{ valueString: 'A'.repeat(21) }], 'too-long'],
    ['two answers to a yes/no question', 'smoker', [{ valueBoolean: true }, { valueBoolean: false }], 'not-repeating'],
    [
      'a flow rate in a unit the form does not offer',
      'flow',
      [{ valueQuantity: { value: 2, system: 'http://unitsofmeasure.org', code: 'mL/h' } }],
      'invalid-value',
    ],
    ['a flow rate without a number', 'flow', [{ valueQuantity: { unit: 'L/min' } }], 'wrong-type'],
    [
      'an orderer that is a patient, not a practitioner',
      'orderer',
      [{ valueReference: { reference: 'Patient/p1' } }],
      'invalid-value',
    ],
    ['an orderer that is not a reference', 'orderer', [{ valueReference: { reference: 'drop table' } }], 'wrong-type'],
    [
      'a report whose content is not base64',
      'report',
      [{ valueAttachment: { contentType: 'application/pdf', data: '<script>' } }],
      'invalid-value',
    ],
    ['an answer to a group', 'vitals', [{ valueString: 'x' }], 'wrong-type'],
  ];
  it.each(cases)('%s', (_what, linkId, answers, code) => {
    const page = pageCopy();
    answer(page, linkId, answers);
    const problems = refused(page);
    expect(problems).toContainEqual(expect.objectContaining({ linkId, code }));
    // The message names the item as the clinician sees it, never the submitted value.
    const problem = problems.find((p) => p.linkId === linkId)!;
    expect(problem.message).toMatch(/^"/);
    expect(problem.message).not.toContain('drop table');
  });

  it.each([
    ['only spaces', '   '],
    ['a control character', 'bell\u0007'],
  ])('a name that is %s', (_what, text) => {
    const page = pageCopy();
    answer(page, 'name', [{ valueString: text }]);
    expect(refused(page)).toEqual([expect.objectContaining({ linkId: 'name', code: 'invalid-value' })]);
  });

  it('an item this questionnaire does not have', () => {
    const page = pageCopy();
    page.item.push({ linkId: 'favourite-colour', answer: [{ valueString: 'blue' }] });
    expect(refused(page)).toEqual([expect.objectContaining({ linkId: 'favourite-colour', code: 'unknown-item' })]);
  });

  it('an item moved out of its group', () => {
    const page = pageCopy();
    page.item.push({ linkId: 'height', answer: [{ valueDecimal: 1.7 }] });
    expect(refused(page)).toEqual([expect.objectContaining({ linkId: 'height', code: 'unknown-item' })]);
  });

  it('a response to another questionnaire', () => {
    const page = pageCopy();
    page['questionnaire'] = 'http://example.org/dtr/Questionnaire/other|1.0.0';
    expect(refused(page)).toEqual([expect.objectContaining({ code: 'other-questionnaire' })]);
    page['questionnaire'] = 'http://example.org/dtr/Questionnaire/oxygen-form|2.0.0';
    expect(refused(page)).toEqual([expect.objectContaining({ code: 'other-questionnaire' })]);
  });

  it('a non-repeating group sent twice', () => {
    const page = pageCopy();
    page.item.push({ linkId: 'vitals', item: [{ linkId: 'height', answer: [{ valueDecimal: 1.7 }] }] });
    expect(refused(page)).toContainEqual(expect.objectContaining({ linkId: 'vitals', code: 'not-repeating' }));
  });

  it('a change to the read-only record number', () => {
    const page = pageCopy();
    answer(page, 'mrn', [{ valueString: 'MRN-9999' }]);
    expect(refused(page)).toEqual([expect.objectContaining({ linkId: 'mrn', code: 'read-only-changed' })]);
  });

  it('a change to the hidden plan id', () => {
    const page = pageCopy();
    answer(page, 'plan-id', [{ valueString: 'PLAN-GOLD' }]);
    expect(refused(page)).toEqual([expect.objectContaining({ linkId: 'plan-id', code: 'read-only-changed' })]);
  });

  it('a body mass index other than the one the form calculates', () => {
    const page = pageCopy();
    answer(page, 'bmi', [{ valueDecimal: 19 }]);
    expect(refused(page)).toEqual([expect.objectContaining({ linkId: 'bmi', code: 'calculated-changed' })]);
  });

  it('every problem of a save is reported at once', () => {
    const page = pageCopy();
    answer(page, 'packs', [{ valueString: 'two' }]);
    answer(page, 'route', [{ valueCoding: { code: 'iv' } }]);
    answer(page, 'name', [{ valueString: 'x'.repeat(30) }]);
    expect(
      refused(page)
        .map((p) => p.code)
        .sort(),
    ).toEqual(['not-in-answer-set', 'too-long', 'wrong-type']);
  });
});

describe('accepted answers', () => {
  it('every item type with a valid answer is stored as the form defines it', () => {
    const page = pageCopy();
    answer(page, 'smoker', [{ valueBoolean: true }]);
    answer(page, 'packs', [{ valueInteger: 2 }]);
    answer(page, 'weight', [{ valueDecimal: -1.5 }]);
    answer(page, 'dob', [{ valueDate: '1950-03' }]);
    answer(page, 'seen', [{ valueDateTime: '2026-11-30T09:15:00+01:00' }]);
    answer(page, 'dose-time', [{ valueTime: '08:30:00' }]);
    answer(page, 'notes', [{ valueString: 'Line one\nline two' }]);
    answer(page, 'site', [{ valueUri: 'https://supplier.example.org/oxygen' }]);
    // The page's display is replaced by the form's own.
    answer(page, 'route', [{ valueCoding: { system: 'http://example.org/route', code: 'mask', display: 'Anything' } }]);
    answer(page, 'severity', [{ valueCoding: { system: 'http://example.org/severity', code: 'severe' } }]);
    answer(page, 'device', [{ valueString: 'Borrowed from a neighbour' }]);
    answer(page, 'shift', [{ valueString: 'night' }]);
    answer(page, 'flow', [{ valueQuantity: { value: 2, unit: 'L/min' } }]);
    answer(page, 'orderer', [{ valueReference: { reference: 'Practitioner/dr-lee', display: 'Dr Lee' } }]);
    answer(page, 'report', [
      { valueAttachment: { contentType: 'application/pdf', data: 'JVBERi0=', title: 'oximetry.pdf' } },
    ]);
    answer(page, 'allergies', [{ valueString: 'penicillin' }, { valueString: 'latex' }]);
    const { response } = saved(page);
    expect(valuesOf(response, 'route')).toEqual([
      { valueCoding: { system: 'http://example.org/route', code: 'mask', display: 'Face mask' } },
    ]);
    expect(valuesOf(response, 'severity')).toEqual([
      { valueCoding: { system: 'http://example.org/severity', code: 'severe', display: 'Severe' } },
    ]);
    expect(valuesOf(response, 'flow')).toEqual([
      { valueQuantity: { value: 2, unit: 'L/min', system: 'http://unitsofmeasure.org', code: 'L/min' } },
    ]);
    expect(valuesOf(response, 'report')).toEqual([
      { valueAttachment: { contentType: 'application/pdf', data: 'JVBERi0=', size: 5, title: 'oximetry.pdf' } },
    ]);
    expect(valuesOf(response, 'allergies')).toHaveLength(2);
    expect(valuesOf(response, 'packs')).toEqual([{ valueInteger: 2 }]);
    expect(valuesOf(response, 'device')).toEqual([{ valueString: 'Borrowed from a neighbour' }]);
  });

  it('a display item sent by the page is left out, not refused', () => {
    const page = pageCopy();
    page.item.push({ linkId: 'intro', text: 'Answer for the patient being ordered oxygen.' });
    const { response } = saved(page);
    expect(valuesOf(response, 'intro')).toEqual([]);
    expect(JSON.stringify(response)).not.toContain('"intro"');
  });

  it('repeating groups keep each repetition', () => {
    const page = pageCopy();
    page.item.push({ linkId: 'visits', item: [{ linkId: 'visit-date', answer: [{ valueDate: '2026-01-02' }] }] });
    page.item.push({ linkId: 'visits', item: [{ linkId: 'visit-date', answer: [{ valueDate: '2026-02-03' }] }] });
    const { response } = saved(page);
    expect(valuesOf(response, 'visit-date')).toEqual([{ valueDate: '2026-01-02' }, { valueDate: '2026-02-03' }]);
  });
});

describe('what the server recomputes', () => {
  it('the body mass index follows the mass the clinician entered, as a value the app calculated', () => {
    const page = pageCopy();
    answer(page, 'mass', [{ valueDecimal: 90 }]);
    const { response } = saved(page);
    expect(valuesOf(response, 'bmi')).toEqual([{ valueDecimal: 27.8 }]);
    expect(originsOf(response, 'bmi')).toEqual([{ source: 'auto-client', author: undefined }]);
    expect(originsOf(response, 'mass')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
  });

  it('a calculated value the page left out, or sent as recomputed, is accepted', () => {
    const page = pageCopy();
    answer(page, 'mass', [{ valueDecimal: 90 }]);
    answer(page, 'bmi', [{ valueDecimal: 27.8 }]);
    expect(valuesOf(saved(page).response, 'bmi')).toEqual([{ valueDecimal: 27.8 }]);
  });

  it('an answer to a question that is not asked (enableWhen false) is dropped and reported', () => {
    const page = pageCopy();
    answer(page, 'smoker', [{ valueBoolean: false }]);
    answer(page, 'packs', [{ valueInteger: 3 }]);
    const result = saved(page);
    expect(result.dropped).toEqual(['packs']);
    expect(valuesOf(result.response, 'packs')).toEqual([]);
  });

  it('the same answer is kept once the question it depends on is answered yes', () => {
    const page = pageCopy();
    answer(page, 'smoker', [{ valueBoolean: true }]);
    answer(page, 'packs', [{ valueInteger: 3 }]);
    const result = saved(page);
    expect(result.dropped).toEqual([]);
    expect(valuesOf(result.response, 'packs')).toEqual([{ valueInteger: 3 }]);
  });

  it('a question nested under an answer is read by the enableWhen of another item', () => {
    const questionnaire: FhirResource = {
      resourceType: 'Questionnaire',
      url: 'http://example.org/dtr/Questionnaire/nested',
      status: 'active',
      item: [
        {
          linkId: 'uses-oxygen',
          text: 'Uses oxygen now',
          type: 'boolean',
          item: [{ linkId: 'litres', text: 'Litres per minute', type: 'integer' }],
        },
        {
          linkId: 'high-flow-reason',
          text: 'Why more than 4 L/min',
          type: 'string',
          enableWhen: [{ question: 'litres', operator: '>', answerInteger: 4 }],
        },
      ],
    };
    const form = { ...formFor(), questionnaire, prefill: { resourceType: 'QuestionnaireResponse' } };
    const submit = (litres: number) => ({
      resourceType: 'QuestionnaireResponse',
      item: [
        {
          linkId: 'uses-oxygen',
          answer: [{ valueBoolean: true, item: [{ linkId: 'litres', answer: [{ valueInteger: litres }] }] }],
        },
        { linkId: 'high-flow-reason', answer: [{ valueString: 'COPD exacerbation' }] },
      ],
    });
    const meta = { ...META, questionnaireCanonical: 'http://example.org/dtr/Questionnaire/nested' };
    const high = reviseResponse(form, submit(6), undefined, DR_LEE, meta);
    const low = reviseResponse(form, submit(2), undefined, DR_LEE, meta);
    if (!high.ok || !low.ok) throw new Error('refused');
    expect(valuesOf(high.response, 'high-flow-reason')).toEqual([{ valueString: 'COPD exacerbation' }]);
    expect(valuesOf(high.response, 'litres')).toEqual([{ valueInteger: 6 }]);
    expect(low.dropped).toEqual(['high-flow-reason']);
  });

  it('read-only and hidden values the page left out are put back as the form has them', () => {
    const page = pageCopy();
    page.item = page.item.filter((i) => i['linkId'] !== 'mrn');
    const { response } = saved(page, undefined);
    expect(valuesOf(response, 'mrn')).toEqual([{ valueString: 'MRN-0042' }]);
    expect(originsOf(response, 'mrn')).toEqual([{ source: 'auto-client', author: undefined }]);
    expect(valuesOf(response, 'plan-id')).toEqual([{ valueString: 'PLAN-7' }]);
  });
});

describe('a calculation the server cannot evaluate', () => {
  it('leaves the page’s value, as the clinician’s, and reports the item as unverified', () => {
    const questionnaire = structuredClone(QUESTIONNAIRE) as FhirResource & { item: Array<Record<string, unknown>> };
    questionnaire.item.push({
      linkId: 'score',
      text: 'Risk score',
      type: 'integer',
      extension: [
        {
          url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression',
          valueExpression: { language: 'text/fhirpath', expression: "%resource.item.noSuchFunction('x')" },
        },
      ],
    });
    const page = pageCopy();
    answer(page, 'score', [{ valueInteger: 4 }]);
    const result = reviseResponse(formFor('2.2', questionnaire), page, undefined, DR_LEE, META);
    if (!result.ok) throw new Error(JSON.stringify(result.problems));
    expect(result.unverified).toEqual(['score']);
    expect(valuesOf(result.response, 'score')).toEqual([{ valueInteger: 4 }]);
    expect(originsOf(result.response, 'score')).toEqual([{ source: 'manual', author: 'Practitioner/dr-lee' }]);
  });
});

describe('static initial values (initial[x])', () => {
  it('a first response gets them as the payer’s values: auto-server in 2.2, auto before', () => {
    const first = saved(pageCopy()).response;
    expect(valuesOf(first, 'consent')).toEqual([{ valueBoolean: true }]);
    expect(originsOf(first, 'consent')).toEqual([{ source: 'auto-server', author: undefined }]);
    const older = saved(pageCopy('2.1'), undefined, '2.1').response;
    expect(originsOf(older, 'consent')).toEqual([{ source: 'auto', author: undefined }]);
  });

  it('a clinician who clears one on a later save keeps it cleared, and a changed one is an override', () => {
    const first = saved(pageCopy()).response;
    const cleared = editable(first);
    cleared.item = cleared.item.filter((i) => i['linkId'] !== 'consent');
    expect(valuesOf(saved(cleared, first).response, 'consent')).toEqual([]);
    const changed = editable(first);
    answer(changed, 'consent', [{ valueBoolean: false }]);
    expect(originsOf(saved(changed, first).response, 'consent')).toEqual([
      { source: 'override', author: 'Practitioner/dr-lee' },
    ]);
  });
});

describe('bad input never throws', () => {
  const deep = () => {
    let node: Record<string, unknown> = { linkId: 'name' };
    for (let i = 0; i < 5_000; i++) node = { linkId: 'vitals', item: [node] };
    return { resourceType: 'QuestionnaireResponse', item: [node] };
  };
  const bad: Array<[string, () => unknown]> = [
    ['nothing', () => undefined],
    ['null', () => null],
    ['a string', () => 'QuestionnaireResponse'],
    ['a list', () => [pageCopy()]],
    ['another resource type', () => ({ resourceType: 'Patient' })],
    [
      'a __proto__ key',
      () => JSON.parse('{"resourceType":"QuestionnaireResponse","item":[{"linkId":"name","__proto__":{"x":1}}]}'),
    ],
    ['a constructor key', () => ({ resourceType: 'QuestionnaireResponse', constructor: { prototype: {} } })],
    [
      'a NUL character',
      () => ({
        resourceType: 'QuestionnaireResponse',
        item: [{ linkId: 'name', answer: [{ valueString: 'a\u0000b' }] }],
      }),
    ],
    ['items that are not a list', () => ({ resourceType: 'QuestionnaireResponse', item: { linkId: 'name' } })],
    ['an item without linkId', () => ({ resourceType: 'QuestionnaireResponse', item: [{ answer: [] }] })],
    [
      'answers that are not a list',
      () => ({ resourceType: 'QuestionnaireResponse', item: [{ linkId: 'name', answer: 'x' }] }),
    ],
    [
      'an answer that is not an object',
      () => ({ resourceType: 'QuestionnaireResponse', item: [{ linkId: 'name', answer: [7] }] }),
    ],
    ['nesting 5000 levels deep', deep],
    [
      'too many items',
      () => ({
        resourceType: 'QuestionnaireResponse',
        item: Array.from({ length: 6_000 }, () => ({ linkId: 'allergies' })),
      }),
    ],
  ];
  it.each(bad)('%s gives problems', (_what, make) => {
    const result = reviseResponse(formFor(), make(), undefined, DR_LEE, META);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.problems.length).toBeGreaterThan(0);
  });
});

describe('a save refused for many reasons', () => {
  it('names the first hundred problems only', () => {
    const page = pageCopy();
    for (let i = 0; i < 3_000; i++) page.item.push({ linkId: `made-up-${i}` });
    const problems = refused(page);
    expect(problems).toHaveLength(100);
    expect(problems[0]).toEqual({
      linkId: 'made-up-0',
      code: 'unknown-item',
      message: 'item made-up-0 is not part of this questionnaire',
    });
  });
});

describe('completion', () => {
  const complete = (page: unknown) => completionProblems(formFor(), saved(page).response);

  it('refuses while a required item is empty, naming it', () => {
    const page = pageCopy();
    page.item = page.item.filter((i) => i['linkId'] !== 'name');
    expect(complete(page)).toEqual([
      { linkId: 'name', code: 'required-missing', message: '"Patient name": an answer is required' },
      expect.objectContaining({ linkId: 'visit-date', code: 'required-missing' }),
    ]);
  });

  it('a required question that is not asked (disabled) does not block completion; once asked it does', () => {
    const page = pageCopy();
    page.item.push({ linkId: 'visits', item: [{ linkId: 'visit-date', answer: [{ valueDate: '2026-01-02' }] }] });
    answer(page, 'smoker', [{ valueBoolean: false }]);
    expect(complete(page)).toEqual([]);
    answer(page, 'smoker', [{ valueBoolean: true }]);
    expect(complete(page)).toEqual([expect.objectContaining({ linkId: 'packs', code: 'required-missing' })]);
  });

  it('each repetition of a group needs its required items', () => {
    const page = pageCopy();
    page.item.push({ linkId: 'visits', item: [{ linkId: 'visit-date', answer: [{ valueDate: '2026-01-02' }] }] });
    const response = saved(page).response;
    (response['item'] as Array<Record<string, unknown>>).push({ linkId: 'visits', item: [] });
    // A repetition left empty is not stored, so the saved response completes.
    expect(completionProblems(formFor(), response)).toEqual([]);
  });

  it('a stored answer the form no longer accepts blocks completion, named', () => {
    const page = pageCopy();
    page.item.push({ linkId: 'visits', item: [{ linkId: 'visit-date', answer: [{ valueDate: '2026-01-02' }] }] });
    const response = saved(page).response;
    (response['item'] as Array<Record<string, unknown>>).push({
      linkId: 'shift',
      answer: [{ valueString: 'weekend' }],
    });
    expect(completionProblems(formFor(), response)).toEqual([
      expect.objectContaining({ linkId: 'shift', code: 'not-in-answer-set' }),
    ]);
  });
});
