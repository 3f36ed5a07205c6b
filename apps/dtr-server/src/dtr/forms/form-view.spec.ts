import { describe, expect, it } from 'vitest';
import type { FormSession } from './form-session.repository.js';
import { definitionOf, metaOf, summaryOf } from './form-view.js';

const form = (overrides: Partial<FormSession> = {}): FormSession => ({
  id: '00000000-0000-4000-8000-000000000001',
  sessionIdHash: 's',
  tenantId: 't',
  patient: 'p1',
  payer: { id: 'payer', name: 'Payer' },
  questionnaire: { url: 'http://example.org/Questionnaire/q', version: '2.0.0', title: 'Q' },
  igVersion: '2.1',
  status: 'in-progress',
  definition: {
    questionnaire: { resourceType: 'Questionnaire' },
    valueSets: [{ resourceType: 'ValueSet' }],
    issues: [],
    options: {},
    answerContext: {},
    orders: ['DeviceRequest/o1', 'ServiceRequest/s1'],
    coverage: ['Coverage/c1'],
    encounter: 'Encounter/e1',
    author: { practitioner: 'Practitioner/pr1', display: 'Dana Ruiz' },
  },
  prefill: { resourceType: 'QuestionnaireResponse' },
  ehr: { id: 'qr1', versionId: '3', savedAt: new Date('2026-12-05T10:00:00Z'), error: 'EHR down' },
  createdAt: new Date('2026-12-05T09:00:00Z'),
  updatedAt: new Date('2026-12-05T10:00:00Z'),
  ...overrides,
});

describe('form view pieces', () => {
  it('gives the QR profile fields: subject, versioned canonical, orders, coverage, encounter, the EHR id, the author', () => {
    const now = new Date('2026-12-05T11:00:00Z');
    expect(metaOf(form(), now)).toEqual({
      id: 'qr1',
      subject: 'Patient/p1',
      author: { practitioner: 'Practitioner/pr1', display: 'Dana Ruiz' },
      authored: '2026-12-05T11:00:00.000Z',
      orders: ['DeviceRequest/o1', 'ServiceRequest/s1'],
      coverage: ['Coverage/c1'],
      encounter: 'Encounter/e1',
      questionnaireCanonical: 'http://example.org/Questionnaire/q|2.0.0',
    });
  });

  it('leaves out an author nobody signed in as, and an EHR id not yet assigned', () => {
    const meta = metaOf(
      form({
        ehr: {},
        questionnaire: { url: 'http://example.org/Questionnaire/q' },
        definition: { ...form().definition, author: {}, coverage: [] },
      }),
      new Date(),
    );
    expect(meta).not.toHaveProperty('author');
    expect(meta).not.toHaveProperty('id');
    expect(meta).not.toHaveProperty('coverage');
    expect(meta.questionnaireCanonical).toBe('http://example.org/Questionnaire/q');
  });

  it('lists a form without its EHR error, and hands the rules the IG version of the payer', () => {
    expect(summaryOf(form())).toEqual({
      id: '00000000-0000-4000-8000-000000000001',
      questionnaire: { url: 'http://example.org/Questionnaire/q', version: '2.0.0', title: 'Q' },
      status: 'in-progress',
      payer: { id: 'payer', name: 'Payer' },
      ehr: { id: 'qr1', versionId: '3', savedAt: '2026-12-05T10:00:00.000Z' },
      updatedAt: '2026-12-05T10:00:00.000Z',
    });
    expect(definitionOf(form())).toMatchObject({ igVersion: '2.1', valueSets: [{ resourceType: 'ValueSet' }] });
  });
});
