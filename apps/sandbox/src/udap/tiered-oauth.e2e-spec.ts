import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TestBrowser } from '../../../../test/support/browser.js';
import { loadSandboxOptions } from '../sandbox.config.js';
import { type RunningSandbox, startSandbox } from '../sandbox.js';
import { ASSERTION_TYPE, b2bStatement, register, signUdapJwt, tokenRequest } from './udap-test-client.js';

/**
 * A UDAP authorization_code client at the sandbox EHR: registration, authorization (with and without Tiered OAuth
 * through the sandbox IdP) and the code exchange with a UDAP authentication token.
 */
describe('sandbox EHR: UDAP authorization code and Tiered OAuth', () => {
  let sandbox: RunningSandbox;
  let app: Server;
  let redirect = '';
  const san = 'https://dtr.example.org/tiered-client';
  let cert: ReturnType<RunningSandbox['udap']['ca']['issue']>;
  let clientId = '';
  let patient = '';
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');

  beforeAll(async () => {
    app = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    redirect = `http://127.0.0.1:${(app.address() as AddressInfo).port}/callback`;
    sandbox = await startSandbox(
      loadSandboxOptions({
        SANDBOX_EHR_PORT: '0',
        SANDBOX_PAYER_PORT: '0',
        SANDBOX_PATIENTS: '2',
      } as NodeJS.ProcessEnv),
    );
    patient = sandbox.ehr.fhir.listPatients()[0]!.id;
    cert = sandbox.udap.ca.issue({ sanUris: [san] });
    const endpoint = `${sandbox.ehr.auth.issuer}/register`;
    const answer = await register(
      endpoint,
      await signUdapJwt(
        cert,
        b2bStatement(san, endpoint, {
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          redirect_uris: [redirect],
          logo_uri: 'https://dtr.example.org/logo.png',
          scope: 'openid fhirUser udap launch/patient patient/*.rs',
        }),
      ),
    );
    expect(answer.status).toBe(201);
    clientId = answer.body['client_id'] as string;
  });
  afterAll(async () => {
    await sandbox?.close();
    app?.close();
  });
  afterEach(() => sandbox.ehr.peer.faults.clear());

  const authorize = async (extra: Record<string, string>, browser = new TestBrowser()) => {
    const url = `${sandbox.ehr.auth.issuer}/auth?${new URLSearchParams({
      response_type: 'code',
      client_id: clientId,
      redirect_uri: redirect,
      scope: 'openid fhirUser launch/patient patient/*.rs',
      state: 'state-1',
      aud: sandbox.ehr.fhirBase,
      sandbox_patient: patient,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      ...extra,
    })}`;
    const hops = await browser.navigate(url);
    const location = hops.find((h) => h.headers['location']?.startsWith(redirect))?.headers['location'];
    expect(location, JSON.stringify(hops.map((h) => [h.url, h.status, h.body.slice(0, 200)]))).toBeDefined();
    return { params: new URL(location!).searchParams, hops };
  };
  const exchange = async (code: string, assertionClaims: Record<string, unknown> = {}) =>
    tokenRequest(`${sandbox.ehr.auth.issuer}/token`, {
      grant_type: 'authorization_code',
      code,
      redirect_uri: redirect,
      code_verifier: verifier,
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: await signUdapJwt(cert, {
        iss: clientId,
        sub: clientId,
        aud: `${sandbox.ehr.auth.issuer}/token`,
        ...assertionClaims,
      }),
      udap: '1',
    });

  it('exchanges a code for tokens with a UDAP authentication token, and refuses a wrong one', async () => {
    const { params } = await authorize({});
    const code = params.get('code')!;
    const wrongAud = await exchange(code, { aud: sandbox.ehr.auth.issuer });
    expect(wrongAud.status).toBe(401);
    expect(wrongAud.body['error']).toBe('invalid_client');
    const token = await exchange(code);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(token.body).toMatchObject({ patient, access_token: expect.any(String), id_token: expect.any(String) });
    const read = await fetch(`${sandbox.ehr.fhirBase}/Patient/${patient}`, {
      headers: { authorization: `Bearer ${String(token.body['access_token'])}` },
    });
    expect(read.status).toBe(200);
  });

  it('sends the user through a trusted IdP and records that the IdP authenticated them', async () => {
    const idp = sandbox.udap.idp.baseUrl;
    const before = sandbox.udap.tieredLogins().length;
    const { params, hops } = await authorize({ scope: 'openid fhirUser udap launch/patient patient/*.rs', idp });
    expect(hops.some((h) => h.url.startsWith(`${idp}/authorize`))).toBe(true);
    expect(params.get('state')).toBe('state-1');
    const token = await exchange(params.get('code')!);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    const logins = sandbox.udap.tieredLogins().slice(before);
    expect(logins).toEqual([expect.objectContaining({ clientId, idp, idpSubject: 'idp-user-1' })]);
    expect(decodeJwt(token.body['id_token'] as string).sub).toBe(logins[0]!.accountId);
    const overHttp = (await (
      await fetch(`${sandbox.ehr.peer.origin}/_sandbox/udap/tiered-logins`)
    ).json()) as unknown[];
    expect(overHttp.length).toBe(before + 1);
  });

  it('sends a user already signed in at the EHR through the IdP all the same', async () => {
    const browser = new TestBrowser();
    const first = await authorize({}, browser);
    expect(first.params.get('code')).not.toBeNull();
    const before = sandbox.udap.tieredLogins().length;
    const { params, hops } = await authorize(
      { scope: 'openid udap launch/patient patient/*.rs', idp: sandbox.udap.idp.baseUrl },
      browser,
    );
    expect(hops.some((h) => h.url.startsWith(`${sandbox.udap.idp.baseUrl}/authorize`))).toBe(true);
    expect(params.get('code')).not.toBeNull();
    expect(sandbox.udap.tieredLogins().length).toBe(before + 1);
  });

  it('answers invalid_idp at the redirect URI for an IdP it does not trust', async () => {
    const { params, hops } = await authorize({
      scope: 'openid udap launch/patient patient/*.rs',
      idp: 'https://idp.elsewhere.example.org',
    });
    expect(params.get('error')).toBe('invalid_idp');
    expect(params.get('state')).toBe('state-1');
    expect(params.get('code')).toBeNull();
    expect(hops.some((h) => h.url.startsWith('https://idp.elsewhere'))).toBe(false);
  });

  it('answers invalid_idp when a trusted IdP serves metadata that does not check out', async () => {
    sandbox.ehr.peer.faults.set({ udapMetadata: 'untrusted-anchor', paths: ['/idp/'] });
    const { params } = await authorize({
      scope: 'openid udap launch/patient patient/*.rs',
      idp: sandbox.udap.idp.baseUrl,
    });
    expect(params.get('error')).toBe('invalid_idp');
    expect(params.get('error_description')).toContain('does not chain to a trusted anchor');
  });
});
