import { describe, expect, it } from 'vitest';
import { PayerHttpError } from './fhir.types.js';
import { SubmissionLedger, bundleSubmissionRoute } from './submission.service.js';

const bundle = (qrId: string | undefined, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    {
      resource: {
        resourceType: 'QuestionnaireResponse',
        status: 'completed',
        ...(qrId ? { identifier: { system: 's', value: qrId } } : {}),
        ...extra,
      },
    },
  ],
});

describe('SubmissionLedger idempotency', () => {
  it('answers a repeat (same key, same content, any key order) with the original result and records it as duplicate', () => {
    const ledger = new SubmissionLedger();
    const first = ledger.submit(bundleSubmissionRoute, bundle('a'));
    const reordered = { entry: bundle('a').entry, type: 'collection', resourceType: 'Bundle' };
    const again = ledger.submit(bundleSubmissionRoute, reordered);
    expect(first.status).toBe(201);
    expect(again).toEqual({ status: 200, body: first.body });
    expect(ledger.all().map((s) => [s.idempotencyKey, s.duplicate])).toEqual([
      ['s|a', false],
      ['s|a', true],
    ]);
  });

  it('refuses the same key with different content (422)', () => {
    const ledger = new SubmissionLedger();
    ledger.submit(bundleSubmissionRoute, bundle('a'), 'k1');
    expect(() => ledger.submit(bundleSubmissionRoute, bundle('b'), 'k1')).toThrow(
      expect.objectContaining({ status: 422 }),
    );
    expect(ledger.all()).toHaveLength(1);
  });

  it('without header or QR identifier, every submission is new', () => {
    const ledger = new SubmissionLedger();
    ledger.submit(bundleSubmissionRoute, bundle(undefined));
    ledger.submit(bundleSubmissionRoute, bundle(undefined));
    expect(ledger.all().map((s) => s.duplicate)).toEqual([false, false]);
  });

  it('refuses a Bundle that is not a collection or does not start with a QuestionnaireResponse', () => {
    const ledger = new SubmissionLedger();
    expect(() => ledger.submit(bundleSubmissionRoute, { ...bundle('a'), type: 'transaction' })).toThrow(PayerHttpError);
    expect(() =>
      ledger.submit(bundleSubmissionRoute, { resourceType: 'Bundle', type: 'collection', entry: [] }),
    ).toThrow(PayerHttpError);
    expect(ledger.all()).toEqual([]);
  });
});
