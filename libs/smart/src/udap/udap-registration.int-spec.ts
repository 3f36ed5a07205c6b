import { randomBytes } from 'node:crypto';
import { AuditLog } from '@dtr/audit';
import { FixedClock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { generateKeyPair } from 'jose';
import type { DataSource } from 'typeorm';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from '../../../../test/support/databases.js';
import {
  type RunningSandbox,
  SANDBOX_COMMUNITY_URI,
  startUdapSandbox,
  type RecordedRequest,
} from '../../../../test/support/udap-sandbox.js';
import { BackendServicesClient } from '../backend-services.js';
import { LaunchService } from '../launch/launch.service.js';
import { SessionStore } from '../sessions/session-store.js';
import { SmartDiscovery } from '../smart-configuration.js';
import { KeyRingSecretBox } from '../key-ring-secret-box.js';
import type { OutboundPolicy } from '../outbound-policy.js';
import type { ClientKeyProvider } from '../smart-client.js';
import { TenantRegistry } from '../tenants/tenant-registry.service.js';
import { TenantUdapRegistration } from './tenant-udap-registration.js';
import { UdapIdentityStore } from './udap-identity-store.js';
import { UdapRegistrar } from './udap-registrar.js';

const SUPPLEMENT = 'https://dtr.example.org/udap/supplement';
const DISCLOSE = 'https://dtr.example.org/udap/disclose';
const COMMUNITY = SANDBOX_COMMUNITY_URI;
const policy: OutboundPolicy = { allowInsecureLoopback: true };

/**
 * Our registrations and client authentication against the sandbox EHR in UDAP mode over real HTTP: its signed
 * metadata, its strict registration endpoint and the UDAP checks in front of its token endpoint. What we sent is read
 * from its request log (the software statements posted, the authentication tokens it accepted); its metadata faults
 * (`udapMetadata`, `udapProfilesOmitted`) stand for a server whose metadata must be refused or offers no Tiered OAuth.
 */
describe('UDAP registration of our identities and UDAP client authentication (real PostgreSQL, real HTTP)', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  let sandbox: RunningSandbox;
  const clock = new FixedClock(new Date());
  let ours: ReturnType<RunningSandbox['udap']['ca']['issue']>;
  let identities: UdapIdentityStore;
  let tenants: TenantRegistry;
  let registration: TenantUdapRegistration;
  let audit: AuditLog;

  const ehrLog = (): RecordedRequest[] => sandbox.ehr.peer.log.all();
  /** The software statements the EHR's registration endpoint received, in order. */
  const statements = () =>
    ehrLog()
      .filter((r) => r.method === 'POST' && r.path.endsWith('/register'))
      .map((r) => r.softwareStatement!);

  beforeAll(async () => {
    sandbox = await startUdapSandbox();
    ours = sandbox.udap.ca.issue({ sanUris: [SUPPLEMENT, DISCLOSE] });

    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_udap_reg');
    await migrate(db.url);
    dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    const box = new KeyRingSecretBox(new Map([['k', randomBytes(32)]]));
    identities = new UdapIdentityStore(dataSource, box, clock);
    await identities.add({ certificatePem: ours.certificatePem, privateKeyPem: ours.privateKeyPem });
    await identities.addAnchor(COMMUNITY, sandbox.udap.anchorPem);
    tenants = new TenantRegistry(dataSource, box, policy);
    audit = new AuditLog(dataSource, randomBytes(32), clock);
    registration = new TenantUdapRegistration(tenants, new UdapRegistrar(identities, policy, clock), audit, {
      clientName: 'DTR test',
      contacts: ['mailto:ops@dtr.example.org'],
      logoUri: 'https://dtr.example.org/logo.png',
    });
    await tenants.upsert({
      id: 'ehr-good',
      name: 'Sandbox EHR',
      fhirBase: sandbox.ehr.fhirBase,
      discloseMode: 'system',
      udapIdp: 'https://idp.example.org',
      supplement: {
        clientId: 'placeholder-supplement',
        authMethod: 'private_key_jwt',
        signingAlg: 'ES384',
        scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
        redirectUri: 'http://127.0.0.1:3000/callback',
      },
      disclose: {
        clientId: 'placeholder-disclose',
        authMethod: 'private_key_jwt',
        signingAlg: 'ES384',
        scopes: ['system/QuestionnaireResponse.c', 'system/DocumentReference.c'],
        redirectUri: 'http://127.0.0.1:3000/callback',
      },
    });
  });
  afterEach(() => sandbox.ehr.peer.faults.clear());
  afterAll(async () => {
    await dataSource?.destroy();
    await db?.drop();
    await sandbox?.close();
  });

  it('registers both identities of a tenant from one certificate with two SAN URIs: launch with authorization_code, system disclosure with client_credentials', async () => {
    const supplement = await registration.register(
      'ehr-good',
      'supplement',
      { san: SUPPLEMENT, community: COMMUNITY },
      'tester',
    );
    const disclose = await registration.register(
      'ehr-good',
      'disclose',
      { san: DISCLOSE, community: COMMUNITY },
      'tester',
    );
    expect(supplement).toMatchObject({ status: 'registered', grantType: 'authorization_code', previousClientId: null });
    expect(disclose).toMatchObject({ status: 'registered', grantType: 'client_credentials' });
    expect(supplement.clientId).not.toBe(disclose.clientId);
    const [launchStatement, systemStatement] = statements();
    expect(launchStatement).toMatchObject({
      iss: SUPPLEMENT,
      sub: SUPPLEMENT,
      aud: `${sandbox.ehr.auth.issuer}/register`,
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: ['http://127.0.0.1:3000/callback'],
      logo_uri: 'https://dtr.example.org/logo.png',
      contacts: ['mailto:ops@dtr.example.org'],
    });
    // The EHR offers Tiered OAuth: the launch client is registered with the udap scope too (a launch may send an idp).
    expect(String(launchStatement!['scope']).split(' ')).toEqual(expect.arrayContaining(['launch', 'openid', 'udap']));
    expect(systemStatement).toMatchObject({ iss: DISCLOSE, grant_types: ['client_credentials'] });
    expect(String(systemStatement!['scope']).split(' ')).not.toContain('udap');
    expect(systemStatement).not.toHaveProperty('redirect_uris');
    const view = (await tenants.get('ehr-good'))!;
    expect(view.registrations).toEqual([
      expect.objectContaining({
        purpose: 'disclose',
        authMethod: 'udap',
        udapSan: DISCLOSE,
        clientId: disclose.clientId,
      }),
      expect.objectContaining({
        purpose: 'supplement',
        authMethod: 'udap',
        udapSan: SUPPLEMENT,
        clientId: supplement.clientId,
      }),
    ]);
    expect(view.registrations[1]!.udapGranted).toMatchObject({
      grant_types: ['authorization_code', 'refresh_token'],
    });
    expect(view.registrations[1]!.udapGranted).not.toHaveProperty('software_statement');
    expect(await tenants.credentialsFor('ehr-good', 'disclose')).toMatchObject({
      authMethod: 'udap',
      udapSan: DISCLOSE,
      udapCommunity: COMMUNITY,
    });
  });

  it('running it again modifies the registration: the client id is kept, and the audit says modified', async () => {
    const before = (await tenants.credentialsFor('ehr-good', 'supplement')).clientId;
    const again = await registration.register(
      'ehr-good',
      'supplement',
      { san: SUPPLEMENT, community: COMMUNITY, clientName: 'DTR renamed' },
      'tester',
    );
    expect(again).toMatchObject({ status: 'modified', clientId: before, previousClientId: before });
    expect(statements().at(-1)).toMatchObject({ client_name: 'DTR renamed' });
    const events = await audit.search({ kind: 'udap-registration' });
    expect(events.map((e) => [e.action, e.outcome, e.detail?.['status']])).toEqual(
      expect.arrayContaining([
        ['C', '0', 'registered'],
        ['U', '0', 'modified'],
      ]),
    );
  });

  it('authenticates Backend Services token requests with a UDAP assertion: x5c of the SAN identity, udap=1, hl7-b2b with TREAT', async () => {
    const credentials = await tenants.credentialsFor('ehr-good', 'disclose');
    const noKeys = {} as ClientKeyProvider;
    const client = new BackendServicesClient(noKeys, policy, clock, undefined, undefined, {
      identities,
      b2b: {
        organizationId: 'https://dtr.example.org',
        organizationName: 'DTR',
        purposeOfUse: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
      },
    });
    const mark = sandbox.ehr.peer.log.mark();
    const registrationOf = {
      tokenEndpoint: `${sandbox.ehr.auth.issuer}/token`,
      clientId: credentials.clientId,
      authMethod: 'udap' as const,
      udapSan: credentials.udapSan!,
      signingAlg: 'ES384' as const,
      scopes: credentials.scopes,
    };
    const token = await client.token(registrationOf);
    // A token the EHR issued to our UDAP disclose client, with the scopes it was registered for.
    expect(await sandbox.ehr.auth.introspect(token)).toMatchObject({
      clientId: credentials.clientId,
      scopes: expect.arrayContaining(credentials.scopes),
    });
    expect(await client.token(registrationOf)).toBe(token);
    const requests = sandbox.ehr.peer.log.since(mark).filter((r) => r.path.endsWith('/token'));
    expect(requests.map((r) => [r.grant?.type, r.status])).toEqual([['client_credentials', 200]]);
    const seen = requests[0]!.udapAuthentication!;
    expect(seen.udap).toBe('1');
    expect(seen.header['x5c']).toEqual(ours.x5c.slice(0, (seen.header['x5c'] as string[]).length));
    expect(seen.claims).toMatchObject({
      iss: credentials.clientId,
      sub: credentials.clientId,
      aud: `${sandbox.ehr.auth.issuer}/token`,
      extensions: {
        'hl7-b2b': {
          version: '1',
          organization_id: 'https://dtr.example.org',
          purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
        },
      },
    });
  });

  it('cancels: the EHR gets empty grant_types, the registration is forgotten, and using it says what to run', async () => {
    const cancelled = await registration.register('ehr-good', 'disclose', { cancel: true }, 'tester');
    expect(cancelled.status).toBe('cancelled');
    expect(statements().at(-1)).toMatchObject({ iss: DISCLOSE, grant_types: [] });
    expect((await tenants.get('ehr-good'))!.registrations.map((r) => r.purpose)).toEqual(['supplement']);
    await expect(tenants.credentialsFor('ehr-good', 'disclose')).rejects.toThrow(
      /tenant ehr-good has no disclose registration .*UDAP client was cancelled.*dtr tenant register-udap/,
    );
  });

  it('refuses metadata whose signature does not check out, or that chains to another community, and stores nothing', async () => {
    const count = statements().length;
    const before = (await tenants.get('ehr-good'))!.registrations;
    const base = sandbox.ehr.fhirBase.replace(/[.]/g, '\\.');
    sandbox.ehr.peer.faults.set({ udapMetadata: 'bad-signature' });
    await expect(
      registration.register('ehr-good', 'supplement', { san: SUPPLEMENT, community: COMMUNITY }, 'tester'),
    ).rejects.toThrow(new RegExp(`^the UDAP metadata of ${base} was refused: .*\\(udap: bad-signature\\)`));
    // Signed by a certificate of a CA outside the community.
    sandbox.ehr.peer.faults.set({ udapMetadata: 'untrusted-anchor' });
    await expect(
      registration.register('ehr-good', 'supplement', { san: SUPPLEMENT, community: COMMUNITY }, 'tester'),
    ).rejects.toThrow(/was refused: .*\(udap: untrusted-anchor\)/);
    expect(statements()).toHaveLength(count);
    expect((await tenants.get('ehr-good'))!.registrations).toEqual(before);
    const failures = (await audit.search({ kind: 'udap-registration' })).filter((e) => e.outcome === '8');
    expect(failures.map((e) => e.detail?.['udap'])).toEqual(
      expect.arrayContaining(['bad-signature', 'untrusted-anchor']),
    );
  });

  it('launch: the idp and the udap scope are sent when the EHR offers udap_to (Tiered OAuth); without udap_to the launch goes on without them, said once', async () => {
    const box = new KeyRingSecretBox(new Map([['k', randomBytes(32)]]));
    /** A launch service of a new process (its UDAP metadata not yet cached), telling `skipped` why an idp was not sent. */
    const launchService = (skipped: Array<[string, string]>) =>
      new LaunchService(
        dataSource,
        tenants,
        new SmartDiscovery(policy, clock),
        new SessionStore(dataSource, box, clock),
        box,
        clock,
        {
          policy,
          keys: { privateKey: async () => ({ key: (await generateKeyPair('ES384')).privateKey, kid: 'k' }) },
          udap: { identities, b2b: { organizationId: 'https://dtr.example.org', purposeOfUse: ['TREAT'] } },
          udapDiscovery: new UdapRegistrar(identities, policy, clock),
          onTieredOAuthSkipped: (tenantId, reason) => skipped.push([tenantId, reason]),
        },
      );
    const offeredSkips: Array<[string, string]> = [];
    const offered = new URL(
      (await launchService(offeredSkips).startStandaloneLaunch('ehr-good', 'browser-1')).authorizationUrl,
    );
    expect(offered.origin + offered.pathname).toBe(`${sandbox.ehr.auth.issuer}/auth`);
    expect(offered.searchParams.get('idp')).toBe('https://idp.example.org');
    expect(offered.searchParams.get('scope')!.split(' ')).toEqual(expect.arrayContaining(['openid', 'udap']));
    expect(offered.searchParams.get('client_id')).toBe(
      (await tenants.credentialsFor('ehr-good', 'supplement')).clientId,
    );
    expect(offeredSkips).toEqual([]);

    sandbox.ehr.peer.faults.set({ udapProfilesOmitted: ['udap_to'] });
    const skipped: Array<[string, string]> = [];
    const launches = launchService(skipped);
    for (const binding of ['browser-2', 'browser-3']) {
      const plain = new URL((await launches.startStandaloneLaunch('ehr-good', binding)).authorizationUrl);
      expect(plain.searchParams.has('idp')).toBe(false);
      expect(plain.searchParams.get('scope')!.split(' ')).not.toContain('udap');
    }
    expect(skipped).toEqual([['ehr-good', 'the EHR does not list udap_to in udap_profiles_supported']]);
  });

  it('refuses to register as a SAN URI no certificate of ours names', async () => {
    await expect(
      registration.register(
        'ehr-good',
        'supplement',
        { san: 'https://dtr.example.org/udap/unknown', community: COMMUNITY },
        'tester',
      ),
    ).rejects.toThrow(
      'no UDAP certificate names https://dtr.example.org/udap/unknown: add one with "dtr udap certs add"',
    );
  });
});
