import type { FhirResource } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { reviseResponse } from './form-rules.js';
import { shapeResponse } from './response-shape.js';
import { DR_LEE, formFor, META, origin, originsOf, pageCopy } from './test-forms.js';

const DTR = 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/';
const extensionsOf = (qr: FhirResource) => qr['extension'] as Array<Record<string, unknown>>;
const referencesOf = (qr: FhirResource, url: string) =>
  extensionsOf(qr)
    .filter((e) => e['url'] === url)
    .map((e) => (e['valueReference'] as { reference: string }).reference);

describe('the DTR QuestionnaireResponse profile of each IG version', () => {
  it('2.2: coverage in qr-coverage, the order and encounter in qr-context', () => {
    const qr = shapeResponse(
      formFor('2.2'),
      { resourceType: 'QuestionnaireResponse', item: [] },
      { ...META, encounter: 'Encounter/e1' },
      'in-progress',
    );
    expect(referencesOf(qr, `${DTR}qr-coverage`)).toEqual(['Coverage/cov1']);
    expect(referencesOf(qr, `${DTR}qr-context`)).toEqual(['DeviceRequest/dr1', 'Encounter/e1']);
    expect(qr['encounter']).toEqual({ reference: 'Encounter/e1' });
    // 2.2 allows a response without items.
    expect(qr['item']).toEqual([]);
  });

  it.each(['2.0.1', '2.1'] as const)(
    '%s: the order and the coverage both in qr-context (never the old StructureDefinition/context)',
    (version) => {
      const qr = shapeResponse(formFor(version), { resourceType: 'QuestionnaireResponse' }, META, 'in-progress');
      expect(referencesOf(qr, `${DTR}qr-context`)).toEqual(['DeviceRequest/dr1', 'Coverage/cov1']);
      expect(referencesOf(qr, `${DTR}qr-coverage`)).toEqual([]);
      expect(JSON.stringify(qr)).not.toContain(`${DTR}context"`);
    },
  );

  it.each(['2.0.1', '2.1'] as const)(
    '%s: a response with no answers still carries the items (item 1..*)',
    (version) => {
      const qr = shapeResponse(
        formFor(version),
        { resourceType: 'QuestionnaireResponse', item: [] },
        META,
        'in-progress',
      );
      const linkIds = (qr['item'] as Array<{ linkId: string; answer?: unknown }>).map((i) => i.linkId);
      expect(linkIds).toContain('name');
      expect(linkIds).toContain('vitals');
      expect(linkIds).not.toContain('intro');
      expect((qr['item'] as Array<{ answer?: unknown }>).every((i) => i.answer === undefined)).toBe(true);
    },
  );

  it('intendedUse with the code system of the version (temp before 2.2, coverage-information-codes in 2.2)', () => {
    const use = (version: '2.1' | '2.2') =>
      extensionsOf(shapeResponse(formFor(version), { resourceType: 'QuestionnaireResponse' }, META, 'completed')).find(
        (e) => e['url'] === `${DTR}intendedUse`,
      );
    expect(use('2.2')).toEqual({
      url: `${DTR}intendedUse`,
      valueCodeableConcept: {
        coding: [
          {
            system: 'http://hl7.org/fhir/us/davinci-crd/CodeSystem/coverage-information-codes',
            code: 'withorder',
            display: 'Include with order',
          },
        ],
      },
    });
    expect(JSON.stringify(use('2.1'))).toContain('http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp');
  });

  it('questionnaire canonical with version, subject, authored, status, profile, and the PractitionerRole as author', () => {
    const qr = shapeResponse(formFor(), { resourceType: 'QuestionnaireResponse', id: 'qr-9' }, META, 'stopped');
    expect(qr).toMatchObject({
      resourceType: 'QuestionnaireResponse',
      id: 'qr-9',
      meta: { profile: [`${DTR}dtr-questionnaireresponse`] },
      questionnaire: 'http://example.org/dtr/Questionnaire/oxygen-form|3.0.0',
      status: 'stopped',
      subject: { reference: 'Patient/p1' },
      authored: '2026-12-05T10:00:00Z',
      author: { reference: 'PractitionerRole/dr-lee-pulmonology', display: 'Dr Lee' },
    });
    const practitionerOnly = shapeResponse(
      formFor(),
      { resourceType: 'QuestionnaireResponse' },
      { ...META, author: { practitioner: 'Practitioner/dr-lee' } },
      'completed',
    );
    expect(practitionerOnly['author']).toEqual({ reference: 'Practitioner/dr-lee' });
  });

  it('answer origins are written in the version’s codes, and an automatic answer never carries an author (dtrx-1)', () => {
    const response: FhirResource = {
      resourceType: 'QuestionnaireResponse',
      item: [
        { linkId: 'name', answer: [{ valueString: 'Ann', extension: [origin('auto-client', 'Practitioner/x')] }] },
        { linkId: 'notes', answer: [{ valueString: 'n', extension: [origin('manual', 'Practitioner/dr-lee')] }] },
      ],
    };
    const older = shapeResponse(formFor('2.1'), response, META, 'in-progress');
    expect(originsOf(older, 'name')).toEqual([{ source: 'auto', author: undefined }]);
    expect(originsOf(older, 'notes')).toEqual([{ source: 'manual', author: 'Practitioner/dr-lee' }]);
    const newer = shapeResponse(formFor('2.2'), { ...response, item: older['item'] }, META, 'in-progress');
    expect(originsOf(newer, 'name')).toEqual([{ source: 'auto-client', author: undefined }]);
  });

  it('the author of an override carries the practitioner and, when known, the role code', () => {
    const page = pageCopy();
    (page.item[0]!['answer'] as Array<Record<string, unknown>>)[0] = { valueString: 'Ann Lee-Smith' };
    const result = reviseResponse(
      formFor(),
      page,
      undefined,
      {
        ...DR_LEE,
        role: { system: 'http://nucc.org/provider-taxonomy', code: '207RP1001X', display: 'Pulmonary Disease' },
      },
      META,
    );
    if (!result.ok) throw new Error('refused');
    const name = (result.response['item'] as Array<{ linkId: string; answer: Array<{ extension: unknown[] }> }>).find(
      (i) => i.linkId === 'name',
    )!;
    expect(name.answer[0]!.extension).toEqual([
      {
        url: `${DTR}information-origin`,
        extension: [
          { url: 'source', valueCode: 'override' },
          {
            url: 'author',
            extension: [
              {
                url: 'role',
                valueCodeableConcept: {
                  coding: [
                    { system: 'http://nucc.org/provider-taxonomy', code: '207RP1001X', display: 'Pulmonary Disease' },
                  ],
                },
              },
              { url: 'practitioner', valueReference: { reference: 'Practitioner/dr-lee', display: 'Dr Lee' } },
            ],
          },
        ],
      },
    ]);
  });

  it('a saved response shaped again replaces its context extensions instead of adding to them', () => {
    const once = shapeResponse(formFor('2.1'), { resourceType: 'QuestionnaireResponse' }, META, 'in-progress');
    const twice = shapeResponse(formFor('2.1'), once, META, 'completed');
    expect(referencesOf(twice, `${DTR}qr-context`)).toEqual(['DeviceRequest/dr1', 'Coverage/cov1']);
    expect(extensionsOf(twice).filter((e) => e['url'] === `${DTR}intendedUse`)).toHaveLength(1);
  });
});

describe('an adaptive response', () => {
  const COVERAGE_INFORMATION = 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information';
  const determination = { url: COVERAGE_INFORMATION, extension: [{ url: 'covered', valueCode: 'covered' }] };

  it('contains its Questionnaire, names it #id, keeps the payer determination once, and is accepted back', () => {
    const form = formFor('2.1');
    const questionnaire = { ...form.questionnaire, id: 'q-adaptive' };
    const meta = { ...META, adaptive: { questionnaire, extensions: [determination] } };
    const qr = shapeResponse(
      form,
      { resourceType: 'QuestionnaireResponse', extension: [determination], item: [] },
      meta,
      'in-progress',
    );
    expect(qr['questionnaire']).toBe('#q-adaptive');
    expect(qr['contained']).toEqual([questionnaire]);
    expect(extensionsOf(qr).filter((e) => e['url'] === COVERAGE_INFORMATION)).toEqual([determination]);
    // The response names its contained Questionnaire: a save of it is judged as this form's.
    expect(reviseResponse(form, qr, undefined, DR_LEE, meta).ok).toBe(true);
    const other = { ...qr, contained: [{ ...questionnaire, url: 'http://example.org/other' }] };
    const refused = reviseResponse(form, other, undefined, DR_LEE, meta);
    expect(refused.ok ? [] : refused.problems.map((p) => p.code)).toEqual(['other-questionnaire']);
  });
});
