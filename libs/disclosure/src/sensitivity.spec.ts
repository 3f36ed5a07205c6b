import { describe, expect, it } from 'vitest';
import { consentRestriction, sensitiveLabels, sourceReasons } from './sensitivity.js';

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const PAYER = { references: ['Organization/payer-1'], identifiers: ['http://example.org/payer-id|P1'] };

describe('sensitivity', () => {
  it('flags R and V confidentiality and every ActCode/ActReason label, not N or M', () => {
    expect(sensitiveLabels([{ system: CONF, code: 'R' }])).toEqual(['confidentiality R']);
    expect(sensitiveLabels([{ system: CONF, code: 'V' }])).toEqual(['confidentiality V']);
    expect(
      sensitiveLabels([
        { system: CONF, code: 'N' },
        { system: CONF, code: 'M' },
      ]),
    ).toEqual([]);
    for (const code of ['ETH', 'HIV', 'PSY', 'SUD', 'SDV', 'SEX', 'NORDSCLCD'])
      expect(sensitiveLabels([{ system: ACT, code }])).toEqual([code]);
    expect(sensitiveLabels([{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'HTEST' }])).toEqual([
      'HTEST',
    ]);
    expect(sensitiveLabels([{ system: 'http://example.org/other', code: 'HIV' }])).toEqual([]);
    expect(sensitiveLabels(undefined)).toEqual([]);
  });

  it('applies an active deny Consent to this payer (by reference or identifier, or to everyone without actors)', () => {
    const deny = (actor: unknown[] | undefined, extra: Record<string, unknown> = {}) => ({
      resourceType: 'Consent',
      id: 'c1',
      status: 'active',
      provision: { type: 'deny', ...(actor ? { actor } : {}), ...extra },
    });
    expect(consentRestriction([deny(undefined)], PAYER).all).toBe(true);
    expect(consentRestriction([deny([{ reference: { reference: 'Organization/payer-1' } }])], PAYER).all).toBe(true);
    expect(
      consentRestriction(
        [deny([{ reference: { identifier: { system: 'http://example.org/payer-id', value: 'P1' } } }])],
        PAYER,
      ).all,
    ).toBe(true);
    // Another recipient, an inactive consent, a permit: nothing restricted.
    expect(consentRestriction([deny([{ reference: { reference: 'Organization/other' } }])], PAYER).all).toBe(false);
    expect(consentRestriction([{ ...deny(undefined), status: 'inactive' }], PAYER).all).toBe(false);
    expect(
      consentRestriction([{ resourceType: 'Consent', status: 'active', provision: { type: 'permit' } }], PAYER).all,
    ).toBe(false);
    // Narrow denies: by data reference, class and label; a nested deny under a permit counts.
    const narrow = consentRestriction(
      [
        {
          resourceType: 'Consent',
          id: 'c2',
          status: 'active',
          provision: {
            type: 'permit',
            provision: [
              {
                type: 'deny',
                data: [{ reference: { reference: 'Condition/psy-1' } }],
                class: [{ code: 'Observation' }],
                securityLabel: [{ system: ACT, code: 'SUD' }],
              },
            ],
          },
        },
      ],
      PAYER,
    );
    expect(narrow.all).toBe(false);
    expect(narrow.consents).toEqual(['c2']);
    expect(sourceReasons({ reference: 'Condition/psy-1' }, narrow)).toEqual([
      'a Consent restricts its disclosure to this payer',
    ]);
    expect(sourceReasons({ reference: 'Observation/o1' }, narrow)).toHaveLength(1);
    expect(sourceReasons({ reference: 'Condition/c9', labels: [{ system: ACT, code: 'SUD' }] }, narrow)).toEqual([
      'labelled SUD',
      'a Consent restricts its disclosure to this payer',
    ]);
    expect(sourceReasons({ reference: 'Condition/c9' }, narrow)).toEqual([]);
  });
});
