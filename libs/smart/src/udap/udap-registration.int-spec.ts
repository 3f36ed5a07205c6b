import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AuditLog } from '@dtr/audit';
import { FixedClock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { type IssuedCertificate, TestCertificateAuthority } from '@dtr/udap';
import { decodeJwt, decodeProtectedHeader, generateKeyPair, importX509, jwtVerify, SignJWT } from 'jose';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from '../../../../test/support/databases.js';
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

type Json = Record<string, unknown>;

/**
 * A UDAP authorization server on 127.0.0.1 (one per path prefix, `/{variant}/fhir`): signed metadata from the
 * community's CA, dynamic registration that verifies each software statement with its x5c and keeps the client id of
 * a SAN URI across modifications, cancellation by empty grant_types, and a token endpoint that accepts only a UDAP
 * client assertion of a registered client. Variants: `good`, `tampered` (metadata altered after signing), `stranger`
 * (signed under another community's CA). The sandbox's own UDAP server is exercised in test/udap.e2e-spec.ts.
 */
describe('UDAP registration of our identities and UDAP client authentication (real PostgreSQL, real HTTP)', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  let server: Server;
  let origin: string;
  const clock = new FixedClock(new Date());
  const community = TestCertificateAuthority.create('Registration Test Community');
  const stranger = TestCertificateAuthority.create('Stranger Community');
  const ours = community.issue({ sanUris: [SUPPLEMENT, DISCLOSE] });
  const metadata = new Map<string, Json>();
  const clients = new Map<string, { clientId: string; grantTypes: string[]; x5c: string }>();
  const statements: Json[] = [];
  const assertions: Array<{ header: Json; claims: Json; udap: string | null; grant: string | null }> = [];
  let identities: UdapIdentityStore;
  let tenants: TenantRegistry;
  let registration: TenantUdapRegistration;
  let audit: AuditLog;

  const base = (variant: string) => `${origin}/${variant}/fhir`;

  async function serveMetadata(
    variant: string,
    signer: IssuedCertificate,
    tamper = false,
    profiles = ['udap_dcr', 'udap_authn', 'udap_authz', 'udap_to'],
  ): Promise<void> {
    const now = Math.floor(Date.now() / 1000);
    const endpoints = {
      authorization_endpoint: `${base(variant)}/authorize`,
      token_endpoint: `${base(variant)}/token`,
      registration_endpoint: `${base(variant)}/register`,
    };
    let signed = await new SignJWT({
      iss: base(variant),
      sub: base(variant),
      iat: now,
      exp: now + 3600,
      jti: variant,
      ...endpoints,
    })
      .setProtectedHeader({ alg: 'RS256', x5c: signer.x5c })
      .sign(createPrivateKey(signer.privateKeyPem));
    if (tamper) {
      const [h, p, s] = signed.split('.');
      const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Json;
      claims['token_endpoint'] = `${base(variant)}/elsewhere`;
      signed = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
    }
    metadata.set(variant, {
      udap_versions_supported: ['1'],
      udap_profiles_supported: profiles,
      udap_authorization_extensions_supported: ['hl7-b2b'],
      udap_authorization_extensions_required: [],
      udap_certifications_supported: [],
      grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS256'],
      registration_endpoint_jwt_signing_alg_values_supported: ['RS256'],
      ...endpoints,
      signed_metadata: signed,
    });
  }

  async function handle(path: string, body: string): Promise<{ status: number; json: Json }> {
    if (path.endsWith('/.well-known/smart-configuration')) {
      const fhir = `${origin}${path.replace('/.well-known/smart-configuration', '')}`;
      return {
        status: 200,
        json: {
          authorization_endpoint: `${fhir}/authorize`,
          token_endpoint: `${fhir}/token`,
          code_challenge_methods_supported: ['S256'],
          capabilities: ['launch-ehr', 'launch-standalone', 'client-confidential-asymmetric'],
        },
      };
    }
    if (path.endsWith('/.well-known/udap')) {
      const doc = metadata.get(path.split('/')[1] ?? '');
      return doc ? { status: 200, json: doc } : { status: 404, json: {} };
    }
    if (path.endsWith('/register')) {
      const { software_statement: statement } = JSON.parse(body) as { software_statement: string };
      const header = decodeProtectedHeader(statement);
      const leaf = (header.x5c as string[])[0]!;
      const pem = new X509Certificate(Buffer.from(leaf, 'base64')).toString();
      const { payload } = await jwtVerify(statement, await importX509(pem, 'RS256'));
      statements.push(payload as Json);
      const iss = payload.iss!;
      const grantTypes = payload['grant_types'] as string[];
      const known = clients.get(iss);
      if (grantTypes.length === 0) {
        clients.delete(iss);
        return { status: 200, json: { client_id: known?.clientId ?? 'unknown', grant_types: [] } };
      }
      const clientId = known?.clientId ?? `client-${randomBytes(6).toString('hex')}`;
      clients.set(iss, { clientId, grantTypes, x5c: leaf });
      return {
        status: known ? 200 : 201,
        json: { client_id: clientId, grant_types: grantTypes, scope: payload['scope'], software_statement: statement },
      };
    }
    if (path.endsWith('/token')) {
      const form = new URLSearchParams(body);
      const assertion = form.get('client_assertion') ?? '';
      const header = decodeProtectedHeader(assertion) as Json;
      const claims = decodeJwt(assertion) as Json;
      const client = [...clients.values()].find((c) => c.clientId === claims['iss']);
      if (!client) return { status: 401, json: { error: 'invalid_client', error_description: 'unknown client' } };
      const pem = new X509Certificate(Buffer.from(client.x5c, 'base64')).toString();
      await jwtVerify(assertion, await importX509(pem, 'RS256'));
      assertions.push({ header, claims, udap: form.get('udap'), grant: form.get('grant_type') });
      return {
        status: 200,
        json: { access_token: `at-${randomBytes(8).toString('hex')}`, token_type: 'Bearer', expires_in: 300 },
      };
    }
    return { status: 404, json: {} };
  }

  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        const path = new URL(req.url ?? '/', 'http://x').pathname;
        handle(path, body).then(
          ({ status, json }) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(json)),
          () => res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_request"}'),
        );
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
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
    await new Promise((resolve) => server?.close(resolve));
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
    const [launchStatement, systemStatement] = statements;
    expect(launchStatement).toMatchObject({
      iss: SUPPLEMENT,
      sub: SUPPLEMENT,
      aud: `${base('good')}/register`,
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: ['http://127.0.0.1:3000/callback'],
      logo_uri: 'https://dtr.example.org/logo.png',
      contacts: ['mailto:ops@dtr.example.org'],
    });
    expect(systemStatement).toMatchObject({ iss: DISCLOSE, grant_types: ['client_credentials'] });
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
    expect(statements.at(-1)).toMatchObject({ client_name: 'DTR renamed' });
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
    expect(assertions).toHaveLength(1);
    const [seen] = assertions;
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
    expect(statements.at(-1)).toMatchObject({ iss: DISCLOSE, grant_types: [] });
    expect((await tenants.get('ehr-good'))!.registrations.map((r) => r.purpose)).toEqual(['supplement']);
    await expect(tenants.credentialsFor('ehr-good', 'disclose')).rejects.toThrow(
      /tenant ehr-good has no disclose registration .*UDAP client was cancelled.*dtr tenant register-udap/,
    );
  });

  it('refuses metadata whose signature does not check out, or that chains to another community, and stores nothing', async () => {
    const count = statements.length;
    await expect(
      registration.register('ehr-tampered', 'supplement', { san: SUPPLEMENT, community: COMMUNITY }, 'tester'),
    ).rejects.toThrow(
      /^the UDAP metadata of http:\/\/127\.0\.0\.1:\d+\/tampered\/fhir was refused: .*\(udap: bad-signature\)/,
    );
    await expect(
      registration.register('ehr-stranger', 'supplement', { san: SUPPLEMENT, community: COMMUNITY }, 'tester'),
    ).rejects.toThrow(/was refused: .*\(udap: untrusted-anchor\)/);
    expect(statements).toHaveLength(count);
    expect((await tenants.get('ehr-tampered'))!.registrations.every((r) => r.authMethod === 'private_key_jwt')).toBe(
      true,
    );
    const failures = (await audit.search({ kind: 'udap-registration' })).filter((e) => e.outcome === '8');
    expect(failures.map((e) => e.detail?.['udap'])).toEqual(
      expect.arrayContaining(['bad-signature', 'untrusted-anchor']),
    );
  });

  it('Tiered OAuth: the idp and the udap scope are sent when the EHR offers udap_to; otherwise the launch goes on without them, said once', async () => {
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
