import type { FhirResource } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { expiredQuestionnaire, mergeResume, reviseResponse } from './form-rules.js';
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

/** A draft saved yesterday: the clinician overrode the name, answered smoker by hand, left the rest as prefilled. */
function savedDraft(): FhirResource {
  const page = pageCopy();
  answer(page, 'name', [{ valueString: 'Ann Lee-Smith' }]);
  answer(page, 'smoker', [{ valueBoolean: false }]);
  const result = reviseResponse(formFor(), page, undefined, DR_LEE, META);
  if (!result.ok) throw new Error('refused');
  return result.response;
}

/** Today's prefill: the EHR now has a new name, a new height, and a record of smoking. */
function freshForm() {
  const form = formFor();
  const prefill = editable(form.prefill);
  answer(prefill, 'name', [{ valueString: 'Ann Lee-Jones', extension: [origin('auto-client')] }]);
  answer(prefill, 'height', [{ valueDecimal: 1.79, extension: [origin('auto-client')] }]);
  answer(prefill, 'smoker', [{ valueBoolean: true, extension: [origin('auto-client')] }]);
  answer(prefill, 'dob', [{ valueDate: '1950-03-01', extension: [origin('auto-client')] }]);
  return { ...form, prefill: prefill as unknown as FhirResource };
}

describe('resuming a saved draft with a fresh prefill', () => {
  it('override and manual answers never change, whatever the EHR says now', () => {
    const { response } = mergeResume(freshForm(), savedDraft());
    expect(valuesOf(response, 'name')).toEqual([{ valueString: 'Ann Lee-Smith' }]);
    expect(originsOf(response, 'name')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
    expect(valuesOf(response, 'smoker')).toEqual([{ valueBoolean: false }]);
  });

  it('a manual answer the EHR now also has a value for becomes override, with its author (spec-72)', () => {
    const { response, updated } = mergeResume(freshForm(), savedDraft());
    expect(originsOf(response, 'smoker')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
    expect(updated).toContain('smoker');
    const unchanged = mergeResume(formFor(), savedDraft()).response;
    expect(originsOf(unchanged, 'smoker')).toEqual([{ source: 'manual', author: 'Practitioner/dr-lee' }]);
  });

  it('automatic answers take the fresh values and new automatic answers are added, both reported', () => {
    const { response, updated, added } = mergeResume(freshForm(), savedDraft());
    expect(valuesOf(response, 'height')).toEqual([{ valueDecimal: 1.79 }]);
    expect(originsOf(response, 'height')).toEqual([{ source: 'auto-client', author: undefined }]);
    expect(valuesOf(response, 'dob')).toEqual([{ valueDate: '1950-03-01' }]);
    // The body mass index follows the new height.
    expect(valuesOf(response, 'bmi')).toEqual([{ valueDecimal: 25.3 }]);
    expect(updated.sort()).toEqual(['bmi', 'height', 'smoker']);
    expect(added).toEqual(['dob']);
    // Unchanged automatic answers are neither updated nor added.
    expect(valuesOf(response, 'mrn')).toEqual([{ valueString: 'MRN-0042' }]);
  });

  it('a calculated value follows an input the clinician overrode, not the fresh prefill’s', () => {
    const page = pageCopy();
    answer(page, 'mass', [{ valueDecimal: 90 }]);
    const draft = reviseResponse(formFor(), page, undefined, DR_LEE, META);
    if (!draft.ok) throw new Error('refused');
    const { response } = mergeResume(freshForm(), draft.response);
    expect(valuesOf(response, 'mass')).toEqual([{ valueDecimal: 90 }]);
    expect(valuesOf(response, 'bmi')).toEqual([{ valueDecimal: 28.1 }]);
    expect(originsOf(response, 'bmi')).toEqual([{ source: 'auto-client', author: undefined }]);
  });

  it('keeps the saved response’s identity, context and items in the form’s order', () => {
    const draft: FhirResource = { ...savedDraft(), id: 'qr-1', meta: { versionId: '3' } };
    const { response } = mergeResume(freshForm(), draft);
    expect(response.id).toBe('qr-1');
    expect(response.meta).toEqual({ versionId: '3' });
    expect(response['extension']).toEqual(draft['extension']);
    const order = (response['item'] as Array<{ linkId: string }>).map((i) => i.linkId);
    expect(order.indexOf('name')).toBeLessThan(order.indexOf('dob'));
    expect(order.indexOf('dob')).toBeLessThan(order.indexOf('vitals'));
  });

  it('the merged response saves again without refusal, and origins survive the save', () => {
    const form = freshForm();
    const draft = savedDraft();
    const { response } = mergeResume(form, draft);
    const result = reviseResponse(form, response, draft, { practitioner: 'Practitioner/dr-kim' }, META);
    if (!result.ok) throw new Error(JSON.stringify(result.problems));
    expect(originsOf(result.response, 'name')).toEqual([{ source: 'override', author: 'Practitioner/dr-lee' }]);
    expect(originsOf(result.response, 'dob')).toEqual([{ source: 'auto-client', author: undefined }]);
  });

  it('an automatic answer the EHR no longer supports is removed and reported; the payer’s initial value stays', () => {
    const draft = savedDraft();
    const form = formFor();
    const prefill = editable(form.prefill);
    prefill.item = prefill.item.filter((i) => i['linkId'] !== 'mrn');
    const { response, updated } = mergeResume({ ...form, prefill: prefill as unknown as FhirResource }, draft);
    expect(valuesOf(response, 'mrn')).toEqual([]);
    expect(updated).toEqual(['mrn']);
    expect(valuesOf(response, 'consent')).toEqual([{ valueBoolean: true }]);
    expect(valuesOf(response, 'plan-id')).toEqual([{ valueString: 'PLAN-7' }]);
  });

  it('a fresh prefill with nothing new changes nothing', () => {
    const draft = savedDraft();
    const { response, updated, added } = mergeResume(formFor(), draft);
    expect(updated).toEqual([]);
    expect(added).toEqual([]);
    expect(response['item']).toEqual(draft['item']);
  });
});

describe('a questionnaire past its effectivePeriod', () => {
  const ending = (end: string) => ({ ...QUESTIONNAIRE, effectivePeriod: { start: '2020-01-01', end } });

  it('is stopped once the end has passed, with a message naming the form and the date', () => {
    const message = expiredQuestionnaire(ending('2026-06-30'), new Date('2026-07-01T00:00:00Z'));
    expect(message).toMatch(/^Home oxygen form was in effect until 2026-06-30/);
    expect(message).toContain('stopped');
  });

  it('a date end covers that whole day, month or year', () => {
    expect(expiredQuestionnaire(ending('2026-06-30'), new Date('2026-06-30T23:59:59Z'))).toBeUndefined();
    expect(expiredQuestionnaire(ending('2026-06'), new Date('2026-06-30T23:59:59Z'))).toBeUndefined();
    expect(expiredQuestionnaire(ending('2026-06'), new Date('2026-07-01T00:00:00Z'))).toBeDefined();
    expect(expiredQuestionnaire(ending('2026'), new Date('2026-12-31T12:00:00Z'))).toBeUndefined();
    expect(expiredQuestionnaire(ending('2026'), new Date('2027-01-01T00:00:00Z'))).toBeDefined();
  });

  it('a dateTime end is exact, time zone included', () => {
    const q = ending('2026-06-30T12:00:00+02:00');
    expect(expiredQuestionnaire(q, new Date('2026-06-30T09:59:59Z'))).toBeUndefined();
    expect(expiredQuestionnaire(q, new Date('2026-06-30T10:00:01Z'))).toBeDefined();
  });

  it('no effectivePeriod, an open end or an unreadable end never stops a form', () => {
    expect(expiredQuestionnaire(QUESTIONNAIRE, new Date('2999-01-01T00:00:00Z'))).toBeUndefined();
    expect(
      expiredQuestionnaire({ ...QUESTIONNAIRE, effectivePeriod: { start: '2020' } }, new Date('2999-01-01')),
    ).toBeUndefined();
    expect(expiredQuestionnaire(ending('soon'), new Date('2999-01-01T00:00:00Z'))).toBeUndefined();
  });
});
