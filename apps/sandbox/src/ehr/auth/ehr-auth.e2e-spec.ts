import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestBrowser } from '../../../../../test/support/browser.js';
import { type PeerServer, startPeerServer } from '../../shared/peer-server.js';
import { createEhrAuthServer, type EhrAuthServer } from './index.js';

let REDIRECT = '';
const SECRET = 'sandbox-client-secret-123';

/** The sandbox EHR's authorization server refuses what a strict server refuses, with the standard OAuth errors. */
describe('sandbox EHR authorization server refusals', () => {
  let peer: PeerServer;
  let auth: EhrAuthServer;
  let jwks: Server;
  let privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

  beforeAll(async () => {
    const pair = await generateKeyPair('ES384', { extractable: true });
    privateKey = pair.privateKey;
    const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES384', use: 'sig' };
    jwks = createServer((_req, res) => res.end(JSON.stringify({ keys: [publicJwk] })));
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    // The redirect URI must answer (the test browser follows it); the JWKS server answers anything.
    REDIRECT = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/callback`;
    peer = await startPeerServer('ehr', '127.0.0.1', 0);
    auth = await createEhrAuthServer({
      peer,
      clients: [
        { clientId: 'secret-client', auth: 'client_secret_basic', clientSecret: SECRET, redirectUris: [REDIRECT] },
        {
          clientId: 'jwt-client',
          auth: 'private_key_jwt',
          jwksUri: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/`,
          grantTypes: ['client_credentials'],
        },
      ],
      users: [{ id: 'u1', fhirUser: 'Practitioner/u1', display: 'U One' }],
      patients: [{ id: 'p1', display: 'P One' }],
    });
  });
  afterAll(async () => {
    await peer?.close();
    jwks?.close();
  });

  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const authorizeUrl = (extra: Record<string, string> = {}) =>
    `${auth.issuer}/auth?${new URLSearchParams({
      response_type: 'code',
      client_id: 'secret-client',
      redirect_uri: REDIRECT,
      scope: 'launch patient/*.rs',
      state: 's1',
      aud: auth.fhirBase,
      launch: auth.createLaunch({ patient: 'p1', user: 'u1' }),
      code_challenge: challenge,
      code_challenge_method: 'S256',
      ...extra,
    })}`;
  const basic = `Basic ${Buffer.from(`secret-client:${SECRET}`).toString('base64')}`;
  const token = (body: Record<string, string>, authorization = basic) =>
    fetch(`${auth.issuer}/token`, {
      method: 'POST',
      headers: { ...(authorization ? { authorization } : {}), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(body),
    });

  async function code(extra: Record<string, string> = {}): Promise<string> {
    const hops = await new TestBrowser().navigate(authorizeUrl(extra));
    const location = hops.find((h) => h.headers['location']?.startsWith(REDIRECT))!.headers['location']!;
    const url = new URL(location);
    expect(url.searchParams.get('state')).toBe('s1');
    expect(url.searchParams.get('iss')).toBe(auth.issuer);
    return url.searchParams.get('code')!;
  }

  it('issues a code and tokens for a correct request, and refuses the same code twice (invalid_grant)', async () => {
    const c = await code();
    const first = await token({
      grant_type: 'authorization_code',
      code: c,
      redirect_uri: REDIRECT,
      code_verifier: verifier,
    });
    expect(first.status).toBe(200);
    expect(await first.json()).toMatchObject({ patient: 'p1', token_type: expect.stringMatching(/^bearer$/i) });
    const again = await token({
      grant_type: 'authorization_code',
      code: c,
      redirect_uri: REDIRECT,
      code_verifier: verifier,
    });
    expect(again.status).toBe(400);
    expect(await again.json()).toMatchObject({ error: 'invalid_grant' });
  });

  it('refuses a wrong code_verifier and a missing PKCE challenge', async () => {
    const c = await code();
    const wrong = await token({
      grant_type: 'authorization_code',
      code: c,
      redirect_uri: REDIRECT,
      code_verifier: randomBytes(32).toString('base64url'),
    });
    expect(await wrong.json()).toMatchObject({ error: 'invalid_grant' });
    const hops = await new TestBrowser().navigate(authorizeUrl({ code_challenge: '', code_challenge_method: '' }));
    const location = hops.find((h) => h.headers['location']?.startsWith(REDIRECT))?.headers['location'];
    expect(new URL(location!).searchParams.get('error')).toBe('invalid_request');
  });

  it('refuses an authorization request without aud, or with another server as aud', async () => {
    const url = new URL(authorizeUrl());
    url.searchParams.delete('aud');
    const missing = await fetch(url, { redirect: 'manual' });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ error: 'invalid_request' });
    url.searchParams.set('aud', 'https://elsewhere.example.org/fhir');
    expect((await fetch(url, { redirect: 'manual' })).status).toBe(400);
  });

  it('refuses a redirect URI that is not registered exactly, without redirecting to it', async () => {
    const hops = await new TestBrowser().navigate(authorizeUrl({ redirect_uri: `${REDIRECT}/evil` }));
    expect(hops.some((h) => h.headers['location']?.startsWith(`${REDIRECT}/evil`))).toBe(false);
    expect(hops[hops.length - 1]!.status).toBe(400);
  });

  it('refuses a wrong secret and an unknown client (invalid_client)', async () => {
    const wrong = await token(
      { grant_type: 'client_credentials' },
      `Basic ${Buffer.from('secret-client:nope').toString('base64')}`,
    );
    expect(await wrong.json()).toMatchObject({ error: 'invalid_client' });
    const unknown = await token(
      { grant_type: 'client_credentials' },
      `Basic ${Buffer.from('who:nope').toString('base64')}`,
    );
    expect(await unknown.json()).toMatchObject({ error: 'invalid_client' });
  });

  const assertion = (claims: Record<string, unknown>) =>
    new SignJWT({ jti: randomBytes(16).toString('hex'), ...claims })
      .setProtectedHeader({ alg: 'ES384', kid: 'k1', typ: 'JWT' })
      .setIssuer('jwt-client')
      .setSubject('jwt-client')
      .setIssuedAt()
      .setExpirationTime('4m')
      .sign(privateKey);
  const jwtToken = (jwt: string) =>
    token(
      {
        grant_type: 'client_credentials',
        scope: 'system/QuestionnaireResponse.cu',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: jwt,
      },
      '',
    );

  it('accepts private_key_jwt with aud = token endpoint, refuses a replayed jti and a wrong aud', async () => {
    const jwt = await assertion({ aud: `${auth.issuer}/token` });
    const ok = await jwtToken(jwt);
    expect(await ok.json()).toMatchObject({ access_token: expect.any(String) });
    const replay = await jwtToken(jwt);
    expect(await replay.json()).toMatchObject({ error: 'invalid_client' });
    const wrongAud = await jwtToken(await assertion({ aud: 'https://elsewhere.example.org/token' }));
    expect(await wrongAud.json()).toMatchObject({ error: 'invalid_client' });
    const issuerAud = await jwtToken(await assertion({ aud: auth.issuer }));
    expect(await issuerAud.json()).toMatchObject({ error: 'invalid_client' });
  });

  it('serves smart-configuration with the SMART fields (issuer included unless configured off)', async () => {
    const config = (await (await fetch(`${auth.fhirBase}/.well-known/smart-configuration`)).json()) as Record<
      string,
      unknown
    >;
    expect(config).toMatchObject({
      issuer: auth.issuer,
      token_endpoint: `${auth.issuer}/token`,
      code_challenge_methods_supported: ['S256'],
      authorization_response_iss_parameter_supported: true,
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    });
    expect(config['capabilities']).toEqual(
      expect.arrayContaining([
        'launch-ehr',
        'launch-standalone',
        'client-confidential-asymmetric',
        'sso-openid-connect',
        'permission-v2',
      ]),
    );
    const bare = await startPeerServer('ehr', '127.0.0.1', 0);
    try {
      const withoutIssuer = await createEhrAuthServer({
        peer: bare,
        clients: [],
        users: [],
        patients: [],
        omitIssuerInSmartConfiguration: true,
      });
      const doc = (await (await fetch(`${withoutIssuer.fhirBase}/.well-known/smart-configuration`)).json()) as Record<
        string,
        unknown
      >;
      expect(doc['issuer']).toBeUndefined();
      expect(doc['capabilities']).not.toContain('sso-openid-connect');
    } finally {
      await bare.close();
    }
  });

  it('returns the launch context in the token response, fhirContext in the 2.0 string form or the 2.1 object form', async () => {
    for (const [style, expected] of [
      ['2.0-strings', ['DeviceRequest/d1', 'Coverage/c1']],
      ['2.1-objects', [{ reference: 'DeviceRequest/d1' }, { reference: 'Coverage/c1', role: 'coverage' }]],
    ] as const) {
      const launch = auth.createLaunch({
        patient: 'p1',
        user: 'u1',
        encounter: 'e1',
        fhirContext: ['DeviceRequest/d1', { reference: 'Coverage/c1', role: 'coverage' }],
        fhirContextStyle: style,
        needPatientBanner: false,
        intent: 'order-review',
        tenant: 't1',
      });
      const c = await code({ launch });
      const body = await (
        await token({ grant_type: 'authorization_code', code: c, redirect_uri: REDIRECT, code_verifier: verifier })
      ).json();
      expect(body).toMatchObject({
        patient: 'p1',
        encounter: 'e1',
        need_patient_banner: false,
        intent: 'order-review',
        tenant: 't1',
        fhirContext: expected,
      });
    }
  });
});
