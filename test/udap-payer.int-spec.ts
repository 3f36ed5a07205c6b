import { randomBytes } from 'node:crypto';
import { AuditLog } from '@dtr/audit';
import { FixedClock } from '@dtr/kernel';
import { backendServicesRegistration, PayerRegistry, PayerUdapRegistration } from '@dtr/payer';
import { createDataSource, migrate } from '@dtr/persistence';
import {
  BackendServicesClient,
  type ClientKeyProvider,
  KeyRingSecretBox,
  type OutboundPolicy,
  UdapIdentityStore,
  UdapRegistrar,
} from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { type RunningSandbox, SANDBOX_COMMUNITY_URI, startUdapSandbox, fingerprint } from './support/udap-sandbox.js';

const PAYER_SAN = 'https://dtr.example.org/udap/payers';
const COMMUNITY = SANDBOX_COMMUNITY_URI;
const policy: OutboundPolicy = { allowInsecureLoopback: true };

/**
 * `dtr payer register-udap` and the payer's token requests: a payer registered with private_key_jwt moves to UDAP
 * (client_credentials, its Backend Services scopes), keeps its client id when registered again, and once cancelled
 * its token requests are refused here with what to run. Real PostgreSQL, real HTTP: the sandbox payer in UDAP mode,
 * whose request log shows the software statements it received and the authentication tokens it accepted.
 */
describe('UDAP registration with a payer and its Backend Services tokens', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  let sandbox: RunningSandbox;
  let payers: PayerRegistry;
  let registration: PayerUdapRegistration;
  let tokens: BackendServicesClient;
  const clock = new FixedClock(new Date());
  /** The software statements the payer's registration endpoint received, in order. */
  const statements = () =>
    sandbox.payer.peer.log
      .all()
      .filter((r) => r.method === 'POST' && r.path.endsWith('/register'))
      .map((r) => r.softwareStatement!);

  beforeAll(async () => {
    sandbox = await startUdapSandbox();
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_udap_payer');
    await migrate(db.url);
    dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    const box = new KeyRingSecretBox(new Map([['k', randomBytes(32)]]));
    const identities = new UdapIdentityStore(dataSource, box, clock);
    const ours = sandbox.udap.ca.issue({ sanUris: [PAYER_SAN] });
    await identities.add({ pkcs12: ours.pkcs12('secret passphrase'), passphrase: 'secret passphrase' });
    await identities.addAnchor(COMMUNITY, sandbox.udap.anchorPem);
    payers = new PayerRegistry(dataSource, policy, box);
    registration = new PayerUdapRegistration(
      payers,
      new UdapRegistrar(identities, policy, clock),
      new AuditLog(dataSource, randomBytes(32), clock),
      { clientName: 'DTR test', contacts: ['mailto:ops@dtr.example.org'] },
    );
    tokens = new BackendServicesClient({} as ClientKeyProvider, policy, clock, undefined, undefined, {
      identities,
      b2b: { organizationId: 'https://dtr.example.org', purposeOfUse: ['urn:oid:2.16.840.1.113883.5.8#TREAT'] },
    });
    await payers.upsert({
      id: 'udap-payer',
      name: 'UDAP payer',
      fhirBase: sandbox.payer.fhirBase,
      tokenEndpoint: 'http://127.0.0.1:9/old-token',
      clientId: 'placeholder',
      signingAlg: 'ES384',
      scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
    });
  });
  afterAll(async () => {
    await dataSource?.destroy();
    await db?.drop();
    await sandbox?.close();
  });

  it('registers for client_credentials with the payer scopes; the client id and the signed token endpoint are stored', async () => {
    const result = await registration.register('udap-payer', { san: PAYER_SAN, community: COMMUNITY }, 'tester');
    expect(result).toMatchObject({ status: 'registered', grantType: 'client_credentials' });
    expect(statements().at(-1)).toMatchObject({
      iss: PAYER_SAN,
      grant_types: ['client_credentials'],
      scope: 'system/Questionnaire.rs system/Library.rs system/ValueSet.rs',
    });
    const payer = (await payers.get('udap-payer'))!;
    expect(payer).toMatchObject({
      authMethod: 'udap',
      clientId: result.clientId,
      tokenEndpoint: sandbox.payer.tokenEndpoint,
      udap: { san: PAYER_SAN, community: COMMUNITY, cancelledAt: null },
    });
  });

  it('asks its tokens with a UDAP assertion carrying hl7-b2b; the payer read and put back keeps UDAP', async () => {
    const payer = (await payers.get('udap-payer'))!;
    const mark = sandbox.payer.peer.log.mark();
    const token = await tokens.token(backendServicesRegistration(payer));
    const [seen, ...more] = sandbox.payer.peer.log.since(mark).filter((r) => r.path.endsWith('/token'));
    expect(more).toEqual([]);
    expect(seen).toMatchObject({
      status: 200,
      clientId: payer.clientId,
      tokenFingerprint: fingerprint(token),
      grant: { type: 'client_credentials' },
      udapAuthentication: {
        udap: '1',
        claims: {
          iss: payer.clientId,
          extensions: { 'hl7-b2b': { purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'] } },
        },
      },
    });
    // The payer as read (its UDAP registration shown) can be put back: the registration is kept, not replaced.
    const again = await payers.upsert({ ...payer, name: 'UDAP payer (renamed)' });
    expect(again).toMatchObject({ authMethod: 'udap', udap: { san: PAYER_SAN, community: COMMUNITY } });
    await expect(payers.upsert({ ...payer, authMethod: 'private_key_jwt', udapSan: PAYER_SAN })).rejects.toThrow(
      'udapSan: is only for authMethod udap',
    );
  });

  it('registering again modifies: same client id', async () => {
    const before = (await payers.get('udap-payer'))!.clientId;
    const result = await registration.register('udap-payer', { san: PAYER_SAN, community: COMMUNITY }, 'tester');
    expect(result).toMatchObject({ status: 'modified', clientId: before, previousClientId: before });
  });

  it('cancels: the payer gets empty grant_types, then token requests are refused here with what to run', async () => {
    const result = await registration.register('udap-payer', { cancel: true }, 'tester');
    expect(result.status).toBe('cancelled');
    expect(statements().at(-1)).toMatchObject({ iss: PAYER_SAN, grant_types: [] });
    const payer = (await payers.get('udap-payer'))!;
    expect(payer.udap?.cancelledAt).toEqual(expect.any(String));
    expect(() => backendServicesRegistration(payer)).toThrow(
      /our UDAP client at payer udap-payer was cancelled on .*: register again with "dtr payer register-udap udap-payer --san <uri>"/,
    );
    // What a clinician is told instead: plain words, no command.
    expect(() => backendServicesRegistration(payer)).toThrow(
      expect.objectContaining({
        code: 'CONFIGURATION',
        userMessage:
          "UDAP payer (renamed) cannot be reached: this service's registration with this payer was cancelled, and an administrator must register it again",
      }),
    );
    await expect(registration.register('udap-payer', { cancel: true }, 'tester')).rejects.toThrow(
      'payer udap-payer has no UDAP registration to cancel',
    );
  });
});
