import type { Submission } from '@dtr/disclosure';
import type { Payer, PayerRegistry } from '@dtr/payer';
import type { BackendServicesClient, OutboundPolicy } from '@dtr/smart';
import { describe, expect, it, vi } from 'vitest';
import { PayerDelivery } from './payer-delivery.js';

const PAYER: Payer = {
  id: 'north-payer',
  name: 'North Health Plan',
  fhirBase: 'https://payer.north.example.org/fhir',
  tokenEndpoint: 'https://payer.north.example.org/token',
  clientId: 'dtr',
  signingAlg: 'ES384',
  scopes: ['system/Claim.c'],
  igVersion: '2.2',
  submissionRoute: 'bundle' as Payer['submissionRoute'],
  coverageIdentifiers: ['http://example.org/payer-id|NORTH'],
  tokenSource: 'backend-services',
  clientCertificate: null,
  authMethod: 'udap',
  udap: {
    san: 'https://dtr.example.org/payer',
    community: null,
    granted: null,
    cancelledAt: '2026-12-01T00:00:00.000Z',
  },
};

describe('PayerDelivery', () => {
  it('a payer whose UDAP registration was cancelled: retried later with plain words, and no token asked (nothing sent)', async () => {
    const token = vi.fn();
    const payers = { get: async () => PAYER, tlsCredentials: async () => undefined } as unknown as PayerRegistry;
    const delivery = new PayerDelivery(
      payers,
      { token } as unknown as BackendServicesClient,
      { allowPrivateNetworks: false, requireHttps: true } as unknown as OutboundPolicy,
      1000,
    );
    const result = await delivery.send({
      id: 'sub-1',
      payerId: PAYER.id,
      path: 'Claim/$submit',
      body: '{}',
    } as unknown as Submission);
    expect(result).toEqual({
      kind: 'retry',
      error:
        "North Health Plan cannot be reached: this service's registration with this payer was cancelled, and an administrator must register it again",
    });
    // The submission goes out only with a token: none was asked, so nothing left for the payer.
    expect(token).not.toHaveBeenCalled();
  });
});
