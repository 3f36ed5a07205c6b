import { randomBytes } from 'node:crypto';
import { AuditLog } from '@dtr/audit';
import { FixedClock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { TestCertificateAuthority } from '@dtr/udap';
import { generateKeyPair } from 'jose';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from '../../../../test/support/databases.js';
import { startUdapTestServer, type UdapTestServer } from '../../../../test/support/udap-test-server.js';
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
const COMMUNITY = 'https://community.example.org/udap';
const policy: OutboundPolicy = { allowInsecureLoopback: true };

/**
 * Our registrations and client authentication against a UDAP authorization server over real HTTP (see
 * test/support/udap-test-server.ts). Variants: `good`, `tampered` (metadata altered after signing), `stranger` (signed
 * under another community's CA), `plain` (no Tiered OAuth).
 */
describe('UDAP registration of our identities and UDAP client authentication (real PostgreSQL, real HTTP)', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  let udap: UdapTestServer;
  const clock = new FixedClock(new Date());
  const community = TestCertificateAuthority.create('Registration Test Community');
  const stranger = TestCertificateAuthority.create('Stranger Community');
  const ours = community.issue({ sanUris: [SUPPLEMENT, DISCLOSE] });
  let identities: UdapIdentityStore;
  let tenants: TenantRegistry;
  let registration: TenantUdapRegistration;
  let audit: AuditLog;

  const base = (variant: string) => udap.base(variant);

  beforeAll(async () => {
    udap = await startUdapTestServer();
    const { base, serveMetadata } = udap;
    await serveMetadata('good', community.issue({ sanUris: [base('good')] }));
    await serveMetadata('tampered', community.issue({ sanUris: [base('tampered')] }), true);
    await serveMetadata('stranger', stranger.issue({ sanUris: [base('stranger')] }));
    await serveMetadata('plain', community.issue({ sanUris: [base('plain')] }), false, ['udap_dcr', 'udap_authn']);

    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_udap_reg');
    await migrate(db.url);
    dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    const box = new KeyRingSecretBox(new Map([['k', randomBytes(32)]]));
    identities = new UdapIdentityStore(dataSource, box, clock);
    await identities.add({ certificatePem: ours.certificatePem, privateKeyPem: ours.privateKeyPem });
    await identities.addAnchor(COMMUNITY, community.anchorPem);
    tenants = new TenantRegistry(dataSource, box, policy);
    audit = new AuditLog(dataSource, randomBytes(32), clock);
    registration = new TenantUdapRegistration(tenants, new UdapRegistrar(identities, policy, clock), audit, {
      clientName: 'DTR test',
      contacts: ['mailto:ops@dtr.example.org'],
      logoUri: 'https://dtr.example.org/logo.png',
    });
    for (const variant of ['good', 'tampered', 'stranger', 'plain']) {
      await tenants.upsert({
        id: `ehr-${variant}`,
        name: `EHR ${variant}`,
        fhirBase: base(variant),
        discloseMode: 'system',
        udapIdp: 'https://idp.example.org',
        supplement: {
          clientId: `${variant}-supplement`,
          authMethod: 'private_key_jwt',
          signingAlg: 'ES384',
          scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
          redirectUri: 'http://127.0.0.1:3000/callback',
        },
        disclose: {
          clientId: `${variant}-disclose`,
          authMethod: 'private_key_jwt',
          signingAlg: 'ES384',
          scopes: ['system/QuestionnaireResponse.c', 'system/DocumentReference.c'],
          redirectUri: 'http://127.0.0.1:3000/callback',
        },
      });
    }
  });
  afterAll(async () => {
    await dataSource?.destroy();
    await db?.drop();
    await udap?.close();
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
    const [launchStatement, systemStatement] = udap.statements;
    expect(launchStatement).toMatchObject({
      iss: SUPPLEMENT,
      sub: SUPPLEMENT,
      aud: `${base('good')}/register`,
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
    expect(udap.statements.at(-1)).toMatchObject({ client_name: 'DTR renamed' });
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
    const registrationOf = {
      tokenEndpoint: `${base('good')}/token`,
      clientId: credentials.clientId,
      authMethod: 'udap' as const,
      udapSan: credentials.udapSan!,
      signingAlg: 'ES384' as const,
      scopes: credentials.scopes,
    };
    const token = await client.token(registrationOf);
    expect(token).toMatch(/^at-/);
    expect(await client.token(registrationOf)).toBe(token);
    expect(udap.assertions).toHaveLength(1);
    const [seen] = udap.assertions;
    expect(seen!.udap).toBe('1');
    expect(seen!.grant).toBe('client_credentials');
    expect(seen!.header['x5c']).toEqual(ours.x5c.slice(0, (seen!.header['x5c'] as string[]).length));
    expect(seen!.claims).toMatchObject({
      iss: credentials.clientId,
      sub: credentials.clientId,
      aud: `${base('good')}/token`,
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
    expect(udap.statements.at(-1)).toMatchObject({ iss: DISCLOSE, grant_types: [] });
    expect((await tenants.get('ehr-good'))!.registrations.map((r) => r.purpose)).toEqual(['supplement']);
    await expect(tenants.credentialsFor('ehr-good', 'disclose')).rejects.toThrow(
      /tenant ehr-good has no disclose registration .*UDAP client was cancelled.*dtr tenant register-udap/,
    );
  });

  it('refuses metadata whose signature does not check out, or that chains to another community, and stores nothing', async () => {
    const count = udap.statements.length;
    await expect(
      registration.register('ehr-tampered', 'supplement', { san: SUPPLEMENT, community: COMMUNITY }, 'tester'),
    ).rejects.toThrow(
      /^the UDAP metadata of http:\/\/127\.0\.0\.1:\d+\/tampered\/fhir was refused: .*\(udap: bad-signature\)/,
    );
    await expect(
      registration.register('ehr-stranger', 'supplement', { san: SUPPLEMENT, community: COMMUNITY }, 'tester'),
    ).rejects.toThrow(/was refused: .*\(udap: untrusted-anchor\)/);
    expect(udap.statements).toHaveLength(count);
    expect((await tenants.get('ehr-tampered'))!.registrations.every((r) => r.authMethod === 'private_key_jwt')).toBe(
      true,
    );
    const failures = (await audit.search({ kind: 'udap-registration' })).filter((e) => e.outcome === '8');
    expect(failures.map((e) => e.detail?.['udap'])).toEqual(
      expect.arrayContaining(['bad-signature', 'untrusted-anchor']),
    );
  });

  it('launch: the idp and the udap scope are sent when the EHR offers udap_to (Tiered OAuth), and the code is exchanged with a UDAP assertion; without udap_to the launch goes on without them, said once', async () => {
    const box = new KeyRingSecretBox(new Map([['k', randomBytes(32)]]));
    const skipped: Array<[string, string]> = [];
    const launches = new LaunchService(
      dataSource,
      tenants,
      new SmartDiscovery(policy, clock),
      new SessionStore(dataSource, box, clock),
      box,
      clock,
      {
        policy,
        // The private_key_jwt tenant's key (only its authorization request is built here).
        keys: { privateKey: async () => ({ key: (await generateKeyPair('ES384')).privateKey, kid: 'k' }) },
        udap: { identities, b2b: { organizationId: 'https://dtr.example.org', purposeOfUse: ['TREAT'] } },
        udapDiscovery: new UdapRegistrar(identities, policy, clock),
        onTieredOAuthSkipped: (tenantId, reason) => skipped.push([tenantId, reason]),
      },
    );
    const offered = new URL((await launches.startStandaloneLaunch('ehr-good', 'browser-1')).authorizationUrl);
    expect(offered.origin + offered.pathname).toBe(`${base('good')}/authorize`);
    expect(offered.searchParams.get('idp')).toBe('https://idp.example.org');
    expect(offered.searchParams.get('scope')!.split(' ')).toEqual(expect.arrayContaining(['openid', 'udap']));
    expect(offered.searchParams.get('client_id')).toBe(
      (await tenants.credentialsFor('ehr-good', 'supplement')).clientId,
    );

    await tenants.upsert({ ...(await putOf('ehr-plain')), udapIdp: 'https://idp.example.org' });
    for (const binding of ['browser-2', 'browser-3']) {
      const plain = new URL((await launches.startStandaloneLaunch('ehr-plain', binding)).authorizationUrl);
      expect(plain.searchParams.has('idp')).toBe(false);
      expect(plain.searchParams.get('scope')!.split(' ')).not.toContain('udap');
    }
    expect(skipped).toEqual([['ehr-plain', 'the EHR does not list udap_to in udap_profiles_supported']]);
  });

  /** A tenant's current settings as `upsert` takes them (private_key_jwt registrations). */
  async function putOf(id: string): Promise<Record<string, unknown>> {
    const view = (await tenants.get(id))!;
    const registration = (purpose: string) => {
      const r = view.registrations.find((x) => x.purpose === purpose)!;
      return {
        clientId: r.clientId,
        authMethod: 'private_key_jwt',
        signingAlg: 'ES384',
        scopes: r.scopes,
        redirectUri: r.redirectUri,
      };
    };
    return {
      id,
      name: view.name,
      fhirBase: view.fhirBase,
      discloseMode: view.discloseMode,
      supplement: registration('supplement'),
      disclose: registration('disclose'),
    };
  }

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
