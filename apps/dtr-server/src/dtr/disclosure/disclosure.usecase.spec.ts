import { describe, expect, it, vi } from 'vitest';
import { FixedClock } from '@dtr/kernel';
import { DisclosureUseCase } from './disclosure.usecase.js';
import { flagsOf, readChoices, withheldItems } from './disclosure-review.js';

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const questionnaire = {
  resourceType: 'Questionnaire',
  item: [
    { linkId: 'dx', text: 'Diagnosis' },
    { linkId: 'dob', text: 'Date of birth' },
    { linkId: 'plain', text: 'Note' },
  ],
};
const qr = {
  resourceType: 'QuestionnaireResponse',
  item: [
    { linkId: 'dx', answer: [{ valueReference: { reference: 'Condition/c-hiv' } }] },
    { linkId: 'dob', answer: [{ valueDate: '1950-01-01' }] },
    { linkId: 'plain', answer: [{ valueString: 'typed by hand' }] },
  ],
};
const labelled = { resourceType: 'Condition', id: 'c-hiv', meta: { security: [{ system: ACT, code: 'HIV' }] } };
const noConsent = {
  all: false,
  references: new Set<string>(),
  types: new Set<string>(),
  labels: new Set<string>(),
  consents: [],
};

describe('disclosure review rules', () => {
  it('flags answers drawn from labelled sources and the labelled resources an answer references', () => {
    const flags = flagsOf(
      questionnaire,
      qr,
      { dob: [{ reference: 'Patient/p1' }], dx: [{ reference: 'Condition/c-hiv', labels: labelled.meta.security }] },
      [labelled],
      noConsent,
    );
    expect(flags.needsChoice).toEqual(['item:dx', 'resource:Condition/c-hiv']);
    expect(flags.answers.find((a) => a.linkId === 'dx')!.reasons.join(' ')).toContain('HIV');
    expect(flags.answers.find((a) => a.linkId === 'dob')!.reasons).toEqual([]);
  });

  it('flags every answer drawn from the record when the Consents could not be checked (but not hand-typed ones)', () => {
    const flags = flagsOf(questionnaire, qr, { dob: [{ reference: 'Patient/p1' }] }, [], undefined);
    expect(flags.needsChoice).toContain('item:dob');
    expect(flags.needsChoice).not.toContain('item:plain');
  });

  it('wants a choice for each flagged entry, refuses unknown keys and values, and withholds referencing answers', () => {
    const needs = ['item:dx', 'resource:Condition/c-hiv'];
    expect(() => readChoices({ choices: { 'item:dx': 'include' } }, needs)).toThrow(/resource:Condition\/c-hiv/);
    expect(() => readChoices({ choices: { 'item:dob': 'include' } }, needs)).toThrow(/no choice is asked/);
    expect(() => readChoices({ choices: { 'item:dx': 'maybe' } }, needs)).toThrow(/include or withhold/);
    expect(() => readChoices({ choices: [] }, needs)).toThrow(/must be an object/);
    const choices = readChoices({ choices: { 'item:dx': 'include', 'resource:Condition/c-hiv': 'withhold' } }, needs);
    // The resource is withheld: the answer naming it goes too (no dangling reference to it leaves).
    expect([...withheldItems(qr, choices)]).toEqual(['dx']);
  });
});

describe('DisclosureUseCase', () => {
  it('refuses to write the copy with a token that is not the disclosure identity, before anything is stored', async () => {
    const createOrGet = vi.fn();
    const useCase = new DisclosureUseCase(
      {
        get: () =>
          Promise.resolve({
            id: 'f1',
            status: 'completed',
            draft: qr,
            ehr: { id: 'qr-1' },
            payer: { id: 'payer-1', name: 'Payer' },
          }),
      } as never,
      {
        token: () => Promise.resolve({ clientId: 'dtr-supplement', accessToken: 'x', fhirBase: 'f', scope: '' }),
      } as never,
      {
        get: () =>
          Promise.resolve({
            singleClient: false,
            discloseMode: 'user-delegated',
            registrations: [
              { purpose: 'supplement', clientId: 'dtr-supplement' },
              { purpose: 'disclose', clientId: 'dtr-disclose' },
            ],
          }),
      } as never,
      { get: () => Promise.resolve({ id: 'payer-1', name: 'Payer' }) } as never,
      { forResponse: () => Promise.resolve(undefined), createOrGet } as never,
      {} as never,
      {} as never,
      new FixedClock(new Date('2026-12-05T00:00:00Z')),
      {} as never,
      { delivery: { writeBackLeaseMs: 60_000 } } as never,
    );
    await expect(useCase.send({ idHash: 'h', tenantId: 't' } as never, 'f1', { choices: {} })).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: expect.stringContaining('not the disclosure identity'),
    });
    expect(createOrGet).not.toHaveBeenCalled();
  });
});
