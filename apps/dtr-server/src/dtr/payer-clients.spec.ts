import { SystemClock } from '@dtr/kernel';
import type { AuditLog } from '@dtr/audit';
import type { Payer, PayerRegistry } from '@dtr/payer';
import type { BackendServicesClient, SessionRecord, SmartSessions } from '@dtr/smart';
import { describe, expect, it } from 'vitest';
import type { AppConfig } from '../config/app.config.js';
import { PayerClients } from './payer-clients.js';

const payer = (fhirBase: string, tokenSource: Payer['tokenSource']): Payer => ({
  id: 'harness',
  name: 'Harness',
  fhirBase,
  tokenEndpoint: 'http://127.0.0.1:9/token',
  clientId: 'c',
  signingAlg: 'ES384',
  scopes: ['system/Questionnaire.rs'],
  igVersion: '2.2',
  submissionRoute: 'bundle',
  coverageIdentifiers: [],
  tokenSource,
  clientCertificate: null,
  authMethod: 'private_key_jwt',
  udap: null,
});
const session = { fhirBase: 'http://127.0.0.1:7001/fhir', idHash: 'h', tenantId: 't' } as SessionRecord;

/** PayerClients alone: which token source a session's payer client may use (the accepted path is in the e2e tier). */
function clients(allowLaunchTokenForPayer: boolean): PayerClients {
  const registry = { tlsCredentials: async () => undefined } as unknown as PayerRegistry;
  return new PayerClients(
    registry,
    {} as BackendServicesClient,
    {} as SmartSessions,
    {} as AuditLog,
    new SystemClock(),
    { allowInsecureLoopback: true },
    { allowLaunchTokenForPayer } as AppConfig,
  );
}

describe('PayerClients', () => {
  it('builds a Backend Services client for a payer registered so, whatever the profile', async () => {
    const client = await clients(false).forSession(payer('http://127.0.0.1:7002/fhir', 'backend-services'), session);
    expect(client.payer.id).toBe('harness');
  });

  it('accepts the launch token for a payer on the EHR origin when allowed', async () => {
    const client = await clients(true).forSession(payer('http://127.0.0.1:7001/harness/fhir', 'launch'), session);
    expect(client.payer.tokenSource).toBe('launch');
  });

  it('refuses the launch token for a payer on another origin (another port is another origin)', async () => {
    await expect(
      clients(true).forSession(payer('http://127.0.0.1:7002/fhir', 'launch'), session),
    ).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: expect.stringMatching(/not on the origin of this session's EHR/),
    });
  });

  it('refuses the launch token in production unless allowed, even on the EHR origin', async () => {
    await expect(
      clients(false).forSession(payer('http://127.0.0.1:7001/harness/fhir', 'launch'), session),
    ).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: expect.stringMatching(/DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER=true/),
    });
  });
});
