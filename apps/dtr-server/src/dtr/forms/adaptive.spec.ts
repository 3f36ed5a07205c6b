import type { FhirResource } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import {
  adaptiveOf,
  automaticOnly,
  containedQuestionnaire,
  itemsNamed,
  onlyItems,
  payerExtensions,
  startingQuestionnaire,
  unusableQuestionnaire,
} from './adaptive.js';

const ADAPTIVE = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-questionnaireAdaptive';
const URL = 'http://example.org/Questionnaire/a';
const origin = (code: string) => ({
  url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/information-origin',
  extension: [{ url: 'source', valueCode: code }],
});

describe('adaptive questionnaires', () => {
  it('are told by the SDC questionnaireAdaptive extension: true (2.0.1) or the $next-question base url', () => {
    const q = (extension: unknown[]) => ({ resourceType: 'Questionnaire', url: URL, extension }) as FhirResource;
    expect(adaptiveOf(q([{ url: ADAPTIVE, valueBoolean: true }]))).toEqual({ extensions: [] });
    expect(adaptiveOf(q([{ url: ADAPTIVE, valueUrl: 'https://payer.example.org/fhir' }]))).toEqual({
      url: 'https://payer.example.org/fhir',
      extensions: [],
    });
    expect(adaptiveOf(q([{ url: ADAPTIVE, valueBoolean: false }]))).toBeUndefined();
    expect(adaptiveOf(q([]))).toBeUndefined();
  });

  it('start from the package Questionnaire, contained: an id, no meta, derivedFrom its canonical', () => {
    const start = startingQuestionnaire({
      resourceType: 'Questionnaire',
      url: URL,
      version: '2',
      meta: { lastUpdated: '2026-01-01T00:00:00Z' },
    });
    expect(start).toMatchObject({ id: 'adaptive', url: URL, derivedFrom: [`${URL}|2`] });
    expect(start.meta).toBeUndefined();
    const response = { resourceType: 'QuestionnaireResponse', questionnaire: '#adaptive', contained: [start] };
    expect(containedQuestionnaire(response)).toBe(start);
    expect(containedQuestionnaire({ ...response, questionnaire: URL })).toBeUndefined();
  });

  it("refuse a payer's Questionnaire that is another one or not a bounded tree of unique linkIds", () => {
    const q = (item: unknown, url = URL) => ({ resourceType: 'Questionnaire', url, item }) as FhirResource;
    expect(unusableQuestionnaire(q([{ linkId: 'a', item: [{ linkId: 'b' }] }]), URL)).toBeUndefined();
    expect(unusableQuestionnaire(q([], 'http://elsewhere'), URL)).toContain('another one');
    expect(unusableQuestionnaire(q({}), URL)).toContain('not a list');
    expect(unusableQuestionnaire(q([{ text: 'no id' }]), URL)).toContain('no linkId');
    expect(unusableQuestionnaire(q([{ linkId: 'a' }, { linkId: 'a' }]), URL)).toContain('twice');
    let deep: unknown[] = [{ linkId: 'leaf' }];
    for (let i = 0; i < 30; i++) deep = [{ linkId: `g${i}`, item: deep }];
    expect(unusableQuestionnaire(q(deep), URL)).toContain('too deeply');
  });

  it('prefill only the new items (in the groups that hold them), and keep only automatic answers on resume', () => {
    const q = {
      resourceType: 'Questionnaire',
      item: [{ linkId: 'old' }, { linkId: 'group', item: [{ linkId: 'asked' }, { linkId: 'new' }] }],
    } as FhirResource;
    expect(onlyItems(q, new Set(['new']))['item']).toEqual([{ linkId: 'group', item: [{ linkId: 'new' }] }]);
    const response = {
      resourceType: 'QuestionnaireResponse',
      extension: [
        { url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context', valueReference: {} },
        { url: 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information', extension: [] },
      ],
      item: [
        { linkId: 'old', answer: [{ valueString: 'typed', extension: [origin('manual')] }] },
        {
          linkId: 'group',
          item: [{ linkId: 'new', answer: [{ valueDate: '1950-01-01', extension: [origin('auto')] }] }],
        },
      ],
    } as FhirResource;
    expect(itemsNamed(response, new Set(['new']))).toEqual([
      {
        linkId: 'group',
        item: [{ linkId: 'new', answer: [{ valueDate: '1950-01-01', extension: [origin('auto')] }] }],
      },
    ]);
    expect(automaticOnly(response)['item']).toEqual([
      { linkId: 'old' },
      {
        linkId: 'group',
        item: [{ linkId: 'new', answer: [{ valueDate: '1950-01-01', extension: [origin('auto')] }] }],
      },
    ]);
    // The DTR context is ours; the payer's determination is kept.
    expect(payerExtensions(response).map((e) => e['url'])).toEqual([
      'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information',
    ]);
  });
});
