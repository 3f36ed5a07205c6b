import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createEhrAuthServer, type EhrAuthServer } from '../apps/sandbox/src/ehr/auth/index.js';
import { type PeerServer, startPeerServer } from '../apps/sandbox/src/shared/peer-server.js';
import { TestBrowser } from './support/browser.js';
import type { ScratchDatabase } from './support/databases.js';
import { type RunningServer, type SpawnedServer, startServer } from './support/processes.js';
import { leakedSecrets } from './support/secrets.js';

const ADMIN = randomBytes(24).toString('hex');
const SECRET = `s-${randomBytes(12).toString('hex')}`;

/**
 * Our server (a separate process) launched by the sandbox EHR's SMART authorization server over real HTTP: the
 * confidential client with a secret (EHR launch) and with private_key_jwt (standalone launch, RS384 and ES384).
 */
describe('SMART launch against the sandbox EHR', () => {
  let running: RunningServer;
  let db: ScratchDatabase;
  let server: SpawnedServer;
  let url: string;
  let peer: PeerServer;
  let auth: EhrAuthServer;

  beforeAll(async () => {
    running = await startServer(inject('adminDatabaseUrl'), 'dtr_smart', {
      DTR_ADMIN_TOKEN: ADMIN,
      DTR_ENCRYPTION_KEYS: `k:${randomBytes(32).toString('base64')}`,
    });
    ({ db, server, url } = running);
    peer = await startPeerServer('ehr', '127.0.0.1', 0);
    auth = await createEhrAuthServer({
      peer,
      clients: [
        {
          clientId: 'dtr-supplement',
          auth: 'client_secret_basic',
          clientSecret: SECRET,
          redirectUris: [`${url}/callback`],
        },
        {
          clientId: 'dtr-standalone-rs',
          auth: 'private_key_jwt',
          jwksUri: `${url}/.well-known/jwks.json`,
          redirectUris: [`${url}/callback`],
        },
        {
          clientId: 'dtr-disclose',
          auth: 'private_key_jwt',
          jwksUri: `${url}/.well-known/jwks.json`,
          redirectUris: [`${url}/callback`],
        },
        {
          clientId: 'dtr-disclose-system',
          auth: 'private_key_jwt',
          jwksUri: `${url}/.well-known/jwks.json`,
          grantTypes: ['client_credentials'],
          // What the EHR registered this client for: anything else asked is refused by the EHR.
          scopes: ['system/QuestionnaireResponse.cu', 'system/DocumentReference.c'],
        },
      ],
      users: [{ id: 'pr1', fhirUser: 'Practitioner/pr1', display: 'Dr. One' }],
      patients: [
        { id: 'p1', display: 'Pat One' },
        { id: 'p2', display: 'Pat Two' },
      ],
      // Far beyond our 30 s refresh margin: a token falls due only when a test makes it so (see the refresh test).
      accessTokenTtlSeconds: 300,
    });
  });

  afterAll(async () => {
    await running?.stop();
    await peer?.close();
  });

  const registerTenant = async (
    supplement: Record<string, unknown>,
    disclose?: Record<string, unknown>,
    discloseMode = 'user-delegated',
  ) => {
    const response = await fetch(`${url}/admin/tenants/sandbox-ehr`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'Sandbox EHR',
        fhirBase: auth.fhirBase,
        discloseMode,
        singleClient: !disclose,
        supplement: { redirectUri: `${url}/callback`, ...supplement },
        ...(disclose ? { disclose: { redirectUri: `${url}/callback`, ...disclose } } : {}),
      }),
    });
    expect(response.status).toBe(200);
  };

  it('EHR launch with a client secret (id with "-") reaches a session with the launch context; no token reaches the browser', async () => {
    await registerTenant({
      clientId: 'dtr-supplement',
      authMethod: 'client_secret_basic',
      clientSecret: SECRET,
      scopes: ['launch', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
    });
    const launch = auth.createLaunch({
      patient: 'p1',
      user: 'pr1',
      fhirContext: [{ reference: 'DeviceRequest/dr1' }, { reference: 'Coverage/cov1' }],
      fhirContextStyle: '2.1-objects',
      needPatientBanner: false,
    });
    const browser = new TestBrowser();
    const hops = await browser.navigate(`${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${launch}`);
    const last = hops[hops.length - 1]!;
    expect(last.url).toBe(`${url}/app`);
    expect(last.status).toBe(200);
    const session = await browser.request(`${url}/api/session`);
    expect(session.status).toBe(200);
    expect(JSON.parse(session.body)).toMatchObject({
      patient: { id: 'p1' },
      orders: ['DeviceRequest/dr1'],
      coverages: ['Coverage/cov1'],
      needPatientBanner: false,
      user: { fhirUser: `${auth.fhirBase}/Practitioner/pr1` },
    });
    // Every response the browser got: no secret the EHR issued (access, refresh and id tokens, the authorization
    // code) appears anywhere in it, glued to other text or encoded.
    const secrets = auth.issuedSecrets();
    expect(secrets.length).toBeGreaterThanOrEqual(4);
    const seenByBrowser = browser.seen
      .filter((seen) => seen.url.startsWith(url)) // what our server answered (the EHR's own redirects carry its code)
      .map((seen) => `${JSON.stringify(seen.headers)} ${seen.setCookies.join(' ')} ${seen.body}`)
      .join('\n');
    expect(leakedSecrets(seenByBrowser, secrets)).toEqual([]);
    expect(browser.cookie(new URL(url).host, 'dtr_session')).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  for (const alg of ['RS384', 'ES384'] as const) {
    it(`standalone launch with private_key_jwt ${alg}: the user picks a patient at the EHR`, async () => {
      await registerTenant({
        clientId: 'dtr-standalone-rs',
        authMethod: 'private_key_jwt',
        signingAlg: alg,
        scopes: ['launch/patient', 'openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
      });
      const browser = new TestBrowser();
      const hops = await browser.navigate(`${url}/launch/standalone?tenant=sandbox-ehr`);
      const picker = hops[hops.length - 1]!;
      expect(picker.body).toContain('Select a patient');
      const action = /<form method="post" action="([^"]+)"><input type="hidden" name="patient" value="p2">/.exec(
        picker.body,
      )?.[1];
      expect(action).toBeDefined();
      const mark = peer.log.mark();
      const after = await browser.navigate(new URL(action!, picker.url).toString(), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'patient=p2',
      });
      expect(after[after.length - 1]!.url).toBe(`${url}/app`);
      const session = JSON.parse((await browser.request(`${url}/api/session`)).body);
      expect(session.patient.id).toBe('p2');
      // The token request authenticated with a private_key_jwt assertion (no client secret exists for this client).
      expect(peer.log.since(mark).some((e) => e.path.endsWith('/token') && e.status === 200)).toBe(true);
    });
  }

  it('refuses a replayed state and a code used twice, with a readable page', async () => {
    await registerTenant({
      clientId: 'dtr-supplement',
      authMethod: 'client_secret_basic',
      clientSecret: SECRET,
      scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
    });
    const launch = auth.createLaunch({ patient: 'p1', user: 'pr1' });
    const browser = new TestBrowser();
    const hops = await browser.navigate(`${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${launch}`);
    const callback = hops.find((h) => h.url.startsWith(`${url}/callback`))!;
    expect(callback.status).toBe(303);
    // Replaying the same callback (same state and code) in the same browser is refused.
    browser.setCookie(new URL(url).host, 'dtr_launch', 'x'.repeat(43));
    const replay = await browser.request(callback.url);
    expect(replay.status).toBe(401);
    expect(replay.body).toContain('already used');

    // The first code presented again, on a fresh launch attempt (its own valid state): it reaches the EHR's token
    // endpoint a second time, the EHR refuses it, and no session is made from it.
    const firstCode = new URL(callback.url).searchParams.get('code')!;
    const second = new TestBrowser();
    const secondLaunch = auth.createLaunch({ patient: 'p1', user: 'pr1' });
    let next = `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${secondLaunch}`;
    for (let hop = 0; hop < 20 && !next.startsWith(`${url}/callback`); hop++) {
      const response = await second.request(next);
      next = new URL(response.headers['location']!, next).toString();
    }
    const swapped = new URL(next);
    expect(swapped.searchParams.get('code')).not.toBe(firstCode);
    swapped.searchParams.set('code', firstCode);
    const mark = peer.log.mark();
    const reused = await second.request(swapped.toString());
    const tokenCalls = peer.log.since(mark).filter((e) => e.path.endsWith('/token'));
    expect(tokenCalls).toHaveLength(1);
    expect(tokenCalls[0]!.status).toBe(400);
    expect(reused.status).toBeGreaterThanOrEqual(400);
    expect(reused.body).toMatch(/refused|invalid/i);
    expect((await second.request(`${url}/api/session`)).status).toBe(401);
  });

  it('refuses a wrong client secret at the EHR: the page says the EHR refused, nothing is kept', async () => {
    await registerTenant({
      clientId: 'dtr-supplement',
      authMethod: 'client_secret_basic',
      clientSecret: 'not-the-right-secret',
      scopes: ['launch', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
    });
    const launch = auth.createLaunch({ patient: 'p1', user: 'pr1' });
    const browser = new TestBrowser();
    const hops = await browser.navigate(`${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${launch}`);
    const last = hops[hops.length - 1]!;
    expect(last.status).toBe(403);
    expect(last.body).toContain('invalid_client');
    // The EHR's own words (its error_description) are on the page: what the administrator has to fix.
    expect(last.body).toContain('(client authentication failed)');
    expect(browser.cookie(new URL(url).host, 'dtr_session')).toBeUndefined();
  });

  it('the EHR refuses an aud that is not its FHIR base', async () => {
    const response = await fetch(
      `${auth.issuer}/auth?response_type=code&client_id=dtr-supplement&aud=${encodeURIComponent('https://elsewhere.example.org/fhir')}`,
      { redirect: 'manual' },
    );
    expect(response.status).toBe(400);
  });

  it('50 concurrent API calls on a token due for refresh cause exactly one refresh at the EHR', async () => {
    await registerTenant({
      clientId: 'dtr-supplement',
      authMethod: 'client_secret_basic',
      clientSecret: SECRET,
      scopes: ['launch', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
    });
    const browser = new TestBrowser();
    await browser.navigate(
      `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${auth.createLaunch({ patient: 'p1', user: 'pr1' })}`,
    );
    // The session's token falls due now: its stored expiry is moved into the past (no waiting on the clock).
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const due = await client.query(
        `UPDATE session_token SET expires_at = now() - interval '1 second' WHERE purpose = 'supplement'`,
      );
      expect(due.rowCount).toBeGreaterThan(0);
    } finally {
      await client.end();
    }
    const mark = peer.log.mark();
    const responses = await Promise.all(Array.from({ length: 50 }, () => browser.request(`${url}/api/session`)));
    expect(responses.every((r) => r.status === 200)).toBe(true);
    const tokenCalls = peer.log.since(mark).filter((e) => e.path.endsWith('/token'));
    expect(tokenCalls).toHaveLength(1);
    expect(tokenCalls[0]!.status).toBe(200);
  });

  it('a dump of the database holds no plaintext token, secret or private key', async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    let dump = '';
    try {
      const tables = await client.query<{ tablename: string }>(
        `SELECT tablename FROM pg_tables WHERE schemaname = 'public'`,
      );
      for (const { tablename } of tables.rows)
        dump += JSON.stringify((await client.query(`SELECT * FROM "${tablename}"`)).rows);
    } finally {
      await client.end();
    }
    expect(dump).not.toContain(SECRET);
    expect(dump).not.toMatch(/"d":"/);
    expect(dump).not.toContain('PRIVATE KEY');
    expect(leakedSecrets(dump, auth.issuedSecrets())).toEqual([]);
  });

  it('user-delegated disclosure: a second authorization with the disclose client, seamless for the same user and patient', async () => {
    await registerTenant(
      {
        clientId: 'dtr-supplement',
        authMethod: 'client_secret_basic',
        clientSecret: SECRET,
        scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs'],
      },
      {
        clientId: 'dtr-disclose',
        authMethod: 'private_key_jwt',
        signingAlg: 'ES384',
        scopes: ['openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
      },
    );
    const browser = new TestBrowser();
    await browser.navigate(
      `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${auth.createLaunch({ patient: 'p1', user: 'pr1' })}`,
    );
    const before = JSON.parse((await browser.request(`${url}/api/session`)).body);
    expect(before.disclosure).toMatchObject({ mode: 'user-delegated', authorized: false });
    // The app page offers it as a form (a POST), allowed by its CSP to lead on to the EHR's authorization endpoint.
    const app = await browser.request(`${url}/app`);
    expect(app.body).toContain('<form method="post" action="/disclose/authorize">');
    expect(app.headers['content-security-policy']).toContain(`form-action 'self' ${new URL(auth.fhirBase).origin}`);
    // A GET (an old link, a prefetch) starts nothing: 405, a page pointing to the button, no request to the EHR.
    const getMark = peer.log.mark();
    const got = await browser.request(`${url}/disclose/authorize`);
    expect(got.status).toBe(405);
    expect(got.headers['allow']).toBe('POST');
    expect(got.headers['location']).toBeUndefined();
    expect(got.setCookies).toEqual([]);
    expect(got.body).toContain('Authorize sending to the payer');
    expect(peer.log.since(getMark)).toEqual([]);
    // A POST from another site is refused; the page's own (same-origin) one starts the authorization.
    const forged = await browser.request(`${url}/disclose/authorize`, {
      method: 'POST',
      headers: { origin: auth.fhirBase.replace(/\/fhir$/, ''), accept: 'text/html' },
    });
    expect(forged.status).toBe(403);
    expect(forged.body).toContain('another origin');
    expect(peer.log.since(getMark)).toEqual([]);
    const mark = peer.log.mark();
    const hops = await browser.navigate(`${url}/disclose/authorize`, {
      method: 'POST',
      headers: { origin: url, 'sec-fetch-site': 'same-origin' },
    });
    expect(hops[hops.length - 1]!.url).toBe(`${url}/app?disclose=authorized`);
    const after = JSON.parse((await browser.request(`${url}/api/session`)).body);
    expect(after.disclosure.authorized).toBe(true);
    // The EHR saw the disclose client id for this authorization, not the supplement one.
    const authorize = peer.log.since(mark).find((e) => e.path.endsWith('/auth'));
    expect(authorize?.query['client_id']).toBe('dtr-disclose');
  });

  it('system-level disclosure: SMART Backend Services with the disclose client and system/ scopes only', async () => {
    await registerTenant(
      {
        clientId: 'dtr-supplement',
        authMethod: 'client_secret_basic',
        clientSecret: SECRET,
        scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs'],
      },
      {
        clientId: 'dtr-disclose-system',
        authMethod: 'private_key_jwt',
        signingAlg: 'RS384',
        scopes: ['system/QuestionnaireResponse.cu', 'system/DocumentReference.c'],
      },
      'system',
    );
    const browser = new TestBrowser();
    const mark = peer.log.mark();
    await browser.navigate(
      `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${auth.createLaunch({ patient: 'p1', user: 'pr1' })}`,
    );
    const view = JSON.parse((await browser.request(`${url}/api/session`)).body);
    expect(view.disclosure).toEqual({ mode: 'system', singleClient: false, authorized: true });
    // Token requests: the launch's authorization code, then client_credentials for the disclose client.
    const tokenCalls = peer.log.since(mark).filter((e) => e.path.endsWith('/token') && e.status === 200);
    expect(tokenCalls).toHaveLength(2);
    // The only browser authorization was the launch's, with the supplement client.
    const authorizations = peer.log.since(mark).filter((e) => /\/auth\/auth$/.test(e.path));
    expect(authorizations.map((e) => e.query['client_id'])).toEqual(['dtr-supplement']);
    // No second authorization in the browser for system-level disclosure.
    const refused = await browser.request(`${url}/disclose/authorize`, { method: 'POST' });
    expect(refused.status).toBe(409);
  });

  const systemDisclosureTenant = (discloseScopes: string[]) =>
    registerTenant(
      {
        clientId: 'dtr-supplement',
        authMethod: 'client_secret_basic',
        clientSecret: SECRET,
        scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs'],
      },
      { clientId: 'dtr-disclose-system', authMethod: 'private_key_jwt', signingAlg: 'RS384', scopes: discloseScopes },
      'system',
    );
  const launchedView = async () => {
    const browser = new TestBrowser();
    await browser.navigate(
      `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${auth.createLaunch({ patient: 'p1', user: 'pr1' })}`,
    );
    return JSON.parse((await browser.request(`${url}/api/session`)).body) as { disclosure: { authorized: boolean } };
  };

  it('system-level disclosure asking for a scope the EHR did not register for the client: the EHR refuses it', async () => {
    await systemDisclosureTenant(['system/QuestionnaireResponse.cu', 'system/Observation.rs']);
    const mark = peer.log.mark();
    const view = await launchedView();
    expect(view.disclosure.authorized).toBe(false);
    const systemCalls = peer.log.since(mark).filter((e) => e.path.endsWith('/token') && e.status !== 200);
    expect(systemCalls.length).toBeGreaterThan(0);
    expect(auth.grantedScopes('dtr-disclose-system').flat()).not.toContain('system/Observation.rs');
  });

  it('system-level disclosure granted more than its registered scopes: we refuse the token', async () => {
    await systemDisclosureTenant(['system/QuestionnaireResponse.cu', 'system/DocumentReference.c']);
    auth.setMisbehaviour({ extraGrantedScope: 'system/*.cruds' });
    try {
      const view = await launchedView();
      expect(view.disclosure.authorized).toBe(false);
    } finally {
      auth.setMisbehaviour({});
    }
    expect((await launchedView()).disclosure.authorized).toBe(true);
    expect(auth.grantedScopes('dtr-disclose-system').at(-1)?.sort()).toEqual([
      'system/DocumentReference.c',
      'system/QuestionnaireResponse.cu',
    ]);
  });

  it('user-delegated disclosure is refused when it comes back for another patient than the session', async () => {
    await registerTenant(
      {
        clientId: 'dtr-supplement',
        authMethod: 'client_secret_basic',
        clientSecret: SECRET,
        scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs'],
      },
      {
        clientId: 'dtr-disclose',
        authMethod: 'private_key_jwt',
        signingAlg: 'ES384',
        scopes: ['openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
      },
    );
    const browser = new TestBrowser();
    await browser.navigate(
      `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${auth.createLaunch({ patient: 'p1', user: 'pr1' })}`,
    );
    // Make the session be about another patient than the EHR's open chart.
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    await client.query(
      `UPDATE app_session SET patient = 'p2', context = jsonb_set(context, '{patient}', '"p2"') WHERE id_hash = (SELECT id_hash FROM app_session ORDER BY created_at DESC LIMIT 1)`,
    );
    await client.end();
    const hops = await browser.navigate(`${url}/disclose/authorize`, { method: 'POST' });
    const last = hops[hops.length - 1]!;
    expect(last.status).toBe(403);
    expect(last.body).toContain('different patient');
    expect(JSON.parse((await browser.request(`${url}/api/session`)).body).disclosure.authorized).toBe(false);
  });

  it('logout revokes at the EHR (it advertises revocation) and ends the session', async () => {
    await registerTenant({
      clientId: 'dtr-supplement',
      authMethod: 'client_secret_basic',
      clientSecret: SECRET,
      scopes: ['launch', 'offline_access', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
    });
    const browser = new TestBrowser();
    await browser.navigate(
      `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${auth.createLaunch({ patient: 'p1', user: 'pr1' })}`,
    );
    const cookie = browser.cookie(new URL(url).host, 'dtr_session')!;
    const mark = peer.log.mark();
    // Another site making the browser post (its cookie riding along) is refused, whatever it says; the session stays.
    for (const headers of <Array<Record<string, string>>>[
      { origin: 'https://evil.example' },
      { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'cross-site' },
      { origin: auth.fhirBase.replace(/\/fhir$/, ''), 'sec-fetch-site': 'same-site' },
    ]) {
      const forged = await browser.request(`${url}/api/session/logout`, { method: 'POST', headers });
      expect(forged.status, JSON.stringify(headers)).toBe(403);
      expect(JSON.parse(forged.body)).toMatchObject({
        resourceType: 'OperationOutcome',
        issue: [{ code: 'forbidden' }],
      });
    }
    expect(peer.log.since(mark)).toEqual([]);
    expect((await browser.request(`${url}/api/session`)).status).toBe(200);
    // The app's own page posting (same origin) is let through.
    const out = await browser.request(`${url}/api/session/logout`, {
      method: 'POST',
      headers: { origin: url, 'sec-fetch-site': 'same-origin' },
    });
    expect(out.status).toBe(200);
    expect(JSON.parse(out.body)).toEqual({ loggedOut: true, revokedAtEhr: true });
    expect(peer.log.since(mark).some((e) => e.path.endsWith('/token/revocation') && e.status === 200)).toBe(true);
    const again = await fetch(`${url}/api/session`, { headers: { cookie: `dtr_session=${cookie}` } });
    expect(again.status).toBe(401);
  });

  for (const [misbehaviour, what] of [
    [{ idToken: 'foreign-key' }, 'an id_token with a bad signature'],
    [{ idToken: 'wrong-aud' }, 'an id_token for another audience'],
    [{ idToken: 'wrong-nonce' }, 'an id_token with a wrong nonce'],
    [{ callbackIss: 'https://another-issuer.example.org' }, 'a callback naming a different issuer (mix-up)'],
  ] as const) {
    it(`refuses ${what}: no session is created`, async () => {
      await registerTenant({
        clientId: 'dtr-supplement',
        authMethod: 'client_secret_basic',
        clientSecret: SECRET,
        scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
      });
      auth.setMisbehaviour(misbehaviour);
      try {
        const browser = new TestBrowser();
        const hops = await browser.navigate(
          `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${auth.createLaunch({ patient: 'p1', user: 'pr1' })}`,
        );
        const last = hops[hops.length - 1]!;
        expect(last.status).toBe(403);
        expect(last.headers['content-type']).toMatch(/text\/html/);
        expect(last.body).toMatch('callbackIss' in misbehaviour ? /different issuer/ : /failed validation/);
        expect(browser.cookie(new URL(url).host, 'dtr_session')).toBeUndefined();
      } finally {
        auth.setMisbehaviour({});
      }
    });
  }

  it("a refresh authenticates as the session's tenant, even once its EHR base is registered to another tenant", async () => {
    await registerTenant({
      clientId: 'dtr-supplement',
      authMethod: 'client_secret_basic',
      clientSecret: SECRET,
      scopes: ['launch', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
    });
    const browser = new TestBrowser();
    await browser.navigate(
      `${url}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${auth.createLaunch({ patient: 'p1', user: 'pr1' })}`,
    );
    const admin = (path: string, method: string, body?: unknown) =>
      fetch(`${url}/admin/tenants/${path}`, {
        method,
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    // The session's tenant moves to another base; another tenant, with another client, takes this EHR's base.
    const moved = await admin('sandbox-ehr', 'PUT', {
      name: 'Sandbox EHR (moved)',
      fhirBase: `${auth.fhirBase}/moved`,
      discloseMode: 'user-delegated',
      singleClient: true,
      supplement: {
        clientId: 'dtr-supplement',
        authMethod: 'client_secret_basic',
        clientSecret: SECRET,
        scopes: ['launch', 'offline_access', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
        redirectUri: `${url}/callback`,
      },
    });
    expect(moved.status, await moved.clone().text()).toBe(200);
    const other = await admin('other-ehr', 'PUT', {
      name: 'Another tenant on the same EHR',
      fhirBase: auth.fhirBase,
      discloseMode: 'user-delegated',
      singleClient: true,
      supplement: {
        clientId: 'dtr-standalone-rs',
        authMethod: 'private_key_jwt',
        signingAlg: 'RS384',
        scopes: ['launch/patient', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
        redirectUri: `${url}/callback`,
      },
    });
    expect(other.status, await other.clone().text()).toBe(200);
    try {
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      try {
        await client.query(`UPDATE session_token SET expires_at = now() - interval '1 second'`);
      } finally {
        await client.end();
      }
      const mark = peer.log.mark();
      const grants = (clientId: string) => auth.grantedScopes(clientId).length;
      const [supplementBefore, otherBefore] = [grants('dtr-supplement'), grants('dtr-standalone-rs')];
      expect((await browser.request(`${url}/api/session`)).status).toBe(200);
      const refreshes = peer.log.since(mark).filter((e) => e.path.endsWith('/token'));
      // One refresh, granted, to the client the session's tenant registered (which the refresh token was issued to);
      // the other tenant's client was never used for it.
      expect(refreshes.map((e) => e.status)).toEqual([200]);
      expect(grants('dtr-supplement')).toBe(supplementBefore + 1);
      expect(grants('dtr-standalone-rs')).toBe(otherBefore);
    } finally {
      expect((await admin('other-ehr', 'DELETE')).status).toBeLessThan(300);
    }
  });

  it('never wrote a token, secret, code or state to its log', () => {
    const log = server.output();
    expect(log).not.toContain(SECRET);
    expect(log).not.toMatch(/code=|state=/);
    expect(auth.issuedSecrets().length).toBeGreaterThan(0);
    expect(leakedSecrets(log, auth.issuedSecrets())).toEqual([]);
  });
});
