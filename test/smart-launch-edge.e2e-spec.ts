import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ScratchDatabase } from './support/databases.js';
import { TestBrowser } from './support/browser.js';
import { repoRoot, type RunningServer, type SpawnedServer, startServer } from './support/processes.js';

const ADMIN = randomBytes(24).toString('hex');
const SECRET = `supplement-secret-${randomBytes(6).toString('hex')}`;
const KEYS = `k1:${randomBytes(32).toString('base64')}`;
const TOKEN_REFUSAL = 'redirect_uri <b>http://localhost/callback</b> does not match the one the code was issued for';

/** A stand-in EHR that only answers smart-configuration and counts every request it gets. */
async function fakeEhr(): Promise<{ server: Server; base: string; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    if (req.url === '/auth/token' && req.method === 'POST') {
      // An EHR refusing every code, saying why in words an administrator can act on (markup included, to be escaped).
      res.statusCode = 400;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ error: 'invalid_grant', error_description: TOKEN_REFUSAL }));
      return;
    }
    if (req.url === '/fhir/.well-known/smart-configuration') {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          authorization_endpoint: `${origin}/auth/authorize`,
          token_endpoint: `${origin}/auth/token`,
          capabilities: ['launch-ehr', 'client-confidential-symmetric'],
          code_challenge_methods_supported: ['S256'],
        }),
      );
      return;
    }
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`, requests };
}

describe('SMART launch edge (no EHR needed)', () => {
  let running: RunningServer;
  let db: ScratchDatabase;
  let server: SpawnedServer;
  let url: string;
  let ehr: Awaited<ReturnType<typeof fakeEhr>>;
  let stranger: Awaited<ReturnType<typeof fakeEhr>>;

  const tenant = () => ({
    name: 'Fake EHR',
    fhirBase: ehr.base,
    discloseMode: 'user-delegated',
    supplement: {
      clientId: 'dtr-supplement',
      authMethod: 'client_secret_basic',
      clientSecret: SECRET,
      scopes: ['launch', 'patient/*.rs'],
      redirectUri: `${url}/callback`,
    },
    disclose: {
      clientId: 'dtr-disclose',
      authMethod: 'private_key_jwt',
      signingAlg: 'ES384',
      scopes: ['user/QuestionnaireResponse.cu'],
      redirectUri: `${url}/callback`,
    },
  });

  beforeAll(async () => {
    ehr = await fakeEhr();
    stranger = await fakeEhr();
    running = await startServer(inject('adminDatabaseUrl'), 'dtr_launch', {
      DTR_ADMIN_TOKEN: ADMIN,
      DTR_ENCRYPTION_KEYS: KEYS,
    });
    ({ db, server, url } = running);
  });

  afterAll(async () => {
    await running?.stop();
    ehr?.server.close();
    stranger?.server.close();
  });

  /**
   * The CLI on the server's database. Run without blocking this process: a test blocked for longer than the server's
   * keep-alive timeout would next reuse a connection the server has closed meanwhile.
   */
  const dtr = (args: string[]) =>
    promisify(execFile)(process.execPath, [path.join(repoRoot, 'bin/dtr.mjs'), ...args], {
      cwd: repoRoot,
      env: { PATH: process.env['PATH'] ?? '', DATABASE_URL: db.url, DTR_ENCRYPTION_KEYS: KEYS },
      encoding: 'utf8',
    });

  const admin = (method: string, pathname: string, body?: unknown, token: string | null = ADMIN) =>
    fetch(`${url}${pathname}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });

  it('admin API: refuses without or with a wrong token, registers with a right one, never returns the secret', async () => {
    expect((await admin('GET', '/admin/tenants', undefined, null)).status).toBe(401);
    expect((await admin('GET', '/admin/tenants', undefined, 'x'.repeat(40))).status).toBe(401);
    const put = await admin('PUT', '/admin/tenants/fake-ehr', tenant());
    expect(put.status).toBe(200);
    const text = await put.text();
    expect(text).not.toContain(SECRET);
    expect(JSON.parse(text)).toMatchObject({
      id: 'fake-ehr',
      fhirBase: ehr.base,
      registrations: [{ purpose: 'disclose' }, { purpose: 'supplement', hasSecret: true }],
    });
    const list = (await (await admin('GET', '/admin/tenants')).json()) as Array<{ id: string }>;
    expect(list.map((t) => t.id)).toContain('fake-ehr');
  });

  it('admin API: an invalid registration is a 400 OperationOutcome naming the field', async () => {
    const bad = await admin('PUT', '/admin/tenants/bad-one', {
      ...tenant(),
      fhirBase: stranger.base,
      disclose: undefined,
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({
      resourceType: 'OperationOutcome',
      issue: [{ diagnostics: expect.stringMatching(/^disclose: /) }],
    });
  });

  it('the CLI sees the same tenants (same database and key ring)', async () => {
    const { stdout: out } = await dtr(['tenant', 'list']);
    expect(JSON.parse(out).map((t: { id: string }) => t.id)).toContain('fake-ehr');
    expect(out).not.toContain(SECRET);
  });

  it('refuses an unknown iss with a readable page, without any request to it', async () => {
    const browser = new TestBrowser();
    const page = await browser.request(`${url}/launch?iss=${encodeURIComponent(stranger.base)}&launch=abc`);
    expect(page.status).toBe(403);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.body).toContain('not registered');
    expect(stranger.requests).toEqual([]);
  });

  it('names the refused iss on the page, escaped, so a localhost / 127.0.0.1 mix-up shows', async () => {
    // The registered EHR, addressed as localhost instead of 127.0.0.1: another iss, refused, and the page says which.
    const asLocalhost = ehr.base.replace('127.0.0.1', 'localhost');
    const page = await new TestBrowser().request(`${url}/launch?iss=${encodeURIComponent(asLocalhost)}&launch=abc`);
    expect(page.status).toBe(403);
    expect(page.body).toContain(`iss ${asLocalhost}`);
    expect(page.body).toContain('localhost vs 127.0.0.1');
    const hostile = `${ehr.base}"><script>alert(1)</script>`;
    const escaped = await new TestBrowser().request(`${url}/launch?iss=${encodeURIComponent(hostile)}&launch=abc`);
    expect(escaped.status).toBe(403);
    expect(escaped.body).not.toContain('<script>alert(1)</script>');
    expect(escaped.body).toContain(`iss ${ehr.base}&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;`);
    expect(ehr.requests.filter((r) => r.includes('alert'))).toEqual([]);
  });

  it('starts an EHR launch for a registered iss: PKCE S256, state, aud, launch, scopes, and a browser binding cookie', async () => {
    const browser = new TestBrowser();
    const response = await browser.request(`${url}/launch?iss=${encodeURIComponent(ehr.base)}&launch=launch-123`);
    expect(response.status).toBe(302);
    const target = new URL(response.headers['location']!);
    expect(`${target.origin}${target.pathname}`).toBe(ehr.base.replace('/fhir', '/auth/authorize'));
    const q = target.searchParams;
    expect(q.get('response_type')).toBe('code');
    expect(q.get('client_id')).toBe('dtr-supplement');
    expect(q.get('redirect_uri')).toBe(`${url}/callback`);
    expect(q.get('aud')).toBe(ehr.base);
    expect(q.get('launch')).toBe('launch-123');
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get('state')!.length).toBeGreaterThanOrEqual(22); // ≥128 bits, base64url
    // openid fhirUser always, though this EHR does not list sso-openid-connect: the clinician must be known.
    expect(q.get('scope')!.split(' ')).toEqual(
      expect.arrayContaining(['launch', 'patient/*.rs', 'openid', 'fhirUser']),
    );
    expect(q.get('nonce')!.length).toBeGreaterThanOrEqual(22);
    expect(response.setCookies.join(';')).toMatch(/dtr_launch=[A-Za-z0-9_-]+.*HttpOnly.*SameSite=Lax/i);
    expect(ehr.requests).toEqual(['GET /fhir/.well-known/smart-configuration']);

    // The state is stored only as a hash.
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const dump =
      JSON.stringify((await client.query('SELECT * FROM launch_attempt')).rows) +
      JSON.stringify((await client.query('SELECT * FROM ehr_registration')).rows);
    await client.end();
    expect(dump).not.toContain(q.get('state')!);
    expect(dump).not.toContain(SECRET);
  });

  it('takes a launch value of up to 8 KiB (a signed JWT from a launcher), and refuses a longer one saying the limit', async () => {
    const jwt = `eyJ${'a'.repeat(1123)}`;
    for (const launch of [jwt, 'b'.repeat(8192)]) {
      const response = await new TestBrowser().request(
        `${url}/launch?iss=${encodeURIComponent(ehr.base)}&launch=${launch}`,
      );
      expect(response.status, `launch of ${launch.length} characters`).toBe(302);
      expect(new URL(response.headers['location']!).searchParams.get('launch')).toBe(launch);
    }
    const refused = await new TestBrowser().request(
      `${url}/launch?iss=${encodeURIComponent(ehr.base)}&launch=${'c'.repeat(8193)}`,
    );
    expect(refused.status).toBe(400);
    expect(refused.body).toContain('at most 8192 (8 KiB)');
  });

  it('refuses a callback from another browser, an unknown state, and escapes what the EHR sent', async () => {
    const noBinding = await new TestBrowser().request(`${url}/callback?code=c&state=s`);
    expect(noBinding.status).toBe(401);
    expect(noBinding.body).toContain('did not start the sign-in');

    const browser = new TestBrowser();
    const start = await browser.request(`${url}/launch?iss=${encodeURIComponent(ehr.base)}&launch=l2`);
    const state = new URL(start.headers['location']!).searchParams.get('state')!;
    const unknown = await browser.request(`${url}/callback?code=c&state=${state}x`);
    expect(unknown.status).toBe(401);
    expect(unknown.body).toContain('unknown, expired or already used');

    const other = new TestBrowser();
    other.setCookie(new URL(url).host, 'dtr_launch', randomBytes(32).toString('base64url'));
    const stolen = await other.request(`${url}/callback?code=c&state=${state}`);
    expect(stolen.status).toBe(403);
    expect(stolen.body).toContain('another browser');

    // The state was consumed by that attempt: single use even for the right browser.
    const replay = await browser.request(`${url}/callback?code=c&state=${state}`);
    expect(replay.status).toBe(401);

    const start2 = await browser.request(`${url}/launch?iss=${encodeURIComponent(ehr.base)}&launch=l3`);
    const state2 = new URL(start2.headers['location']!).searchParams.get('state')!;
    const evil = '<script>alert(1)</script>';
    const refused = await browser.request(
      `${url}/callback?state=${state2}&error=access_denied&error_description=${encodeURIComponent(evil)}`,
    );
    expect(refused.status).toBe(403);
    expect(refused.body).toContain('access_denied');
    expect(refused.body).not.toContain(evil);
    expect(refused.body).toContain('&lt;script&gt;');
  });

  it("shows the token endpoint's error_description (escaped) on the page and logs it with the page's request id", async () => {
    const browser = new TestBrowser();
    const start = await browser.request(`${url}/launch?iss=${encodeURIComponent(ehr.base)}&launch=l4`);
    const state = new URL(start.headers['location']!).searchParams.get('state')!;
    const refused = await browser.request(`${url}/callback?code=some-code&state=${state}`);
    expect(refused.status).toBe(403);
    expect(refused.headers['content-type']).toMatch(/text\/html/);
    expect(refused.body).toContain('the token endpoint refused the request: invalid_grant');
    expect(refused.body).not.toContain('<b>');
    expect(refused.body).toContain('redirect_uri &lt;b&gt;http://localhost/callback&lt;/b&gt; does not match');
    const requestId = /Reference: <code>([^<]+)<\/code>/.exec(refused.body)?.[1];
    expect(requestId).toBe(refused.headers['x-request-id']);
    await expect
      .poll(() =>
        server
          .output()
          .split('\n')
          .filter((line) => line.includes(`"requestId":"${requestId}"`) && line.includes('browser flow refused')),
      )
      .toEqual([expect.stringContaining(JSON.stringify(TOKEN_REFUSAL).slice(1, -1))]);
  });

  it('opens the launch to framing only for a tenant that lists its EHR origins, with cookies that work in a frame', async () => {
    const launchOnce = () => new TestBrowser().request(`${url}/launch?iss=${encodeURIComponent(ehr.base)}&launch=f1`);
    const plain = await launchOnce();
    expect(plain.status).toBe(302);
    expect(plain.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(plain.headers['x-frame-options']).toBe('DENY');
    expect(plain.setCookies.join(';')).toMatch(/SameSite=Lax/i);
    expect(plain.setCookies.join(';')).not.toMatch(/Partitioned|SameSite=None/i);

    const framed = await admin('PUT', '/admin/tenants/fake-ehr', {
      ...tenant(),
      frameAncestors: ['https://portal.example.org', 'http://localhost:4000'],
    });
    expect(framed.status).toBe(200);
    expect(await framed.json()).toMatchObject({
      frameAncestors: ['https://portal.example.org', 'http://localhost:4000'],
    });
    const embedded = await launchOnce();
    expect(embedded.status).toBe(302);
    expect(embedded.headers['content-security-policy']).toContain(
      "frame-ancestors 'self' https://portal.example.org http://localhost:4000",
    );
    expect(embedded.headers['content-security-policy']).not.toContain("frame-ancestors 'none'");
    expect(embedded.headers['x-frame-options']).toBeUndefined();
    const cookie = embedded.setCookies.find((c) => c.startsWith('dtr_launch='))!;
    expect(cookie).toMatch(/; Secure/);
    expect(cookie).toMatch(/; SameSite=None/);
    expect(cookie).toMatch(/; Partitioned/);
    expect(cookie).toMatch(/; HttpOnly/);
    // Its error pages can be shown in the frame too; an unknown EHR's never.
    const tooLong = await new TestBrowser().request(
      `${url}/launch?iss=${encodeURIComponent(ehr.base)}&launch=${'c'.repeat(8193)}`,
    );
    expect(tooLong.status).toBe(400);
    expect(tooLong.headers['content-security-policy']).toContain("frame-ancestors 'self' https://portal.example.org");
    const unknown = await new TestBrowser().request(`${url}/launch?iss=${encodeURIComponent(stranger.base)}&launch=a`);
    expect(unknown.headers['content-security-policy']).toContain("frame-ancestors 'none'");

    const bad = await admin('PUT', '/admin/tenants/fake-ehr', {
      ...tenant(),
      frameAncestors: ['https://*.example.org'],
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({
      issue: [{ diagnostics: expect.stringMatching(/^frameAncestors\.0: wildcards are not accepted/) }],
    });
    expect((await admin('PUT', '/admin/tenants/fake-ehr', tenant())).status).toBe(200);
    expect((await launchOnce()).headers['content-security-policy']).toContain("frame-ancestors 'none'");
  });

  it('refuses a state-changing request from another site (Origin, Sec-Fetch-Site) before reading it', async () => {
    const post = (headers: Record<string, string>, body = '{}') =>
      fetch(`${url}/api/session/logout`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
      });
    const foreign = await post({ origin: 'https://evil.example' });
    expect(foreign.status).toBe(403);
    expect(await foreign.json()).toMatchObject({
      resourceType: 'OperationOutcome',
      issue: [{ code: 'forbidden', diagnostics: expect.stringContaining('another origin (https://evil.example)') }],
    });
    // Another port of the same host is another origin (and the same site): refused either way.
    const port = new URL(url).port;
    expect((await post({ origin: `http://127.0.0.1:${Number(port) + 1}` })).status).toBe(403);
    expect((await post({ origin: 'null' })).status).toBe(403);
    for (const site of ['cross-site', 'same-site']) {
      const page = await post({ 'sec-fetch-site': site, accept: 'text/html,application/xhtml+xml,*/*;q=0.8' });
      expect(page.status, site).toBe(403);
      expect(page.headers.get('content-type')).toMatch(/text\/html/);
      const text = await page.text();
      expect(text).toContain('Request refused');
      expect(text).toContain(`Sec-Fetch-Site: ${site}`);
    }
    // Refused without reading a large body, and the connection answered (not reset).
    const big = await post({ origin: 'https://evil.example' }, JSON.stringify({ x: 'y'.repeat(2 * 1024 * 1024) }));
    expect(big.status).toBe(403);
    // Our own origin, or no browser headers at all (an API client): past the check, to the session guard (401).
    expect((await post({ origin: url })).status).toBe(401);
    expect((await post({ 'sec-fetch-site': 'same-origin', origin: url })).status).toBe(401);
    expect((await post({})).status).toBe(401);
    // The admin API too: a bearer call from a script passes, one a foreign page makes is refused.
    const adminFromPage = await fetch(`${url}/admin/tenants/fake-ehr`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', origin: 'https://evil.example' },
      body: JSON.stringify(tenant()),
    });
    expect(adminFromPage.status).toBe(403);
    expect((await admin('PUT', '/admin/tenants/fake-ehr', tenant())).status).toBe(200);
  });

  it('keeps the API behind the session: no cookie, no session', async () => {
    const response = await fetch(`${url}/api/session`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'login' }] });
    const forged = await fetch(`${url}/api/session`, {
      headers: { cookie: `dtr_session=${randomBytes(32).toString('base64url')}` },
    });
    expect(forged.status).toBe(401);
  });

  it('publishes its signing keys (generated at boot outside production) with a cache header, public parts only', async () => {
    const response = await fetch(`${url}/.well-known/jwks.json`);
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('public, max-age=300');
    const jwks = (await response.json()) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys.map((k) => k['alg']).sort()).toEqual(['ES384', 'RS384']);
    for (const key of jwks.keys)
      expect(Object.keys(key).filter((m) => ['d', 'p', 'q', 'dp', 'dq', 'qi'].includes(m))).toEqual([]);

    // `dtr keys rotate` makes a new ES384 key; the old one stays published while it retires.
    await dtr(['keys', 'rotate', '--alg', 'ES384']);
    const after = (await (await fetch(`${url}/.well-known/jwks.json`)).json()) as {
      keys: Array<Record<string, unknown>>;
    };
    expect(after.keys.filter((k) => k['alg'] === 'ES384')).toHaveLength(2);
    expect(after.keys.map((k) => k['kid'])).toEqual(expect.arrayContaining(jwks.keys.map((k) => k['kid'])));

    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const dump = JSON.stringify((await client.query('SELECT * FROM client_signing_key')).rows);
    await client.end();
    expect(dump).not.toMatch(/"d":/);
  });

  it('registers a payer through the admin API and lists it publicly (JSON and the supported-payers List)', async () => {
    const payer = {
      name: 'Example payer',
      fhirBase: 'https://payer.example.org/fhir',
      tokenEndpoint: 'https://payer.example.org/auth/token',
      clientId: 'dtr-backend',
      signingAlg: 'ES384',
      scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
      igVersion: '2.1',
      coverageIdentifiers: ['http://example.org/payer-id|EX'],
    };
    expect((await admin('PUT', '/admin/payers/example-payer', payer, null)).status).toBe(401);
    const put = await admin('PUT', '/admin/payers/example-payer', payer);
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({ id: 'example-payer', igVersion: '2.1', submissionRoute: 'bundle' });
    const bad = await admin('PUT', '/admin/payers/bad', {
      ...payer,
      fhirBase: 'https://payer.example.org/fhir2',
      scopes: ['patient/*.rs'],
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ issue: [{ diagnostics: expect.stringMatching(/^scopes\.0: /) }] });

    // The DTR shape exactly: `payers`, each with id and name only (nothing the operator configured).
    const listed = await fetch(`${url}/api/payers`, { headers: { accept: 'application/json' } });
    expect(listed.status).toBe(200);
    expect(listed.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await listed.json()).toEqual({ payers: [{ id: 'example-payer', name: 'Example payer' }] });
    const fhirList = (await (await fetch(`${url}/api/payers?_format=list`)).json()) as Record<string, unknown>;
    expect(fhirList).toMatchObject({
      resourceType: 'List',
      contained: [{ resourceType: 'Organization', id: 'payer1', identifier: [{ value: 'example-payer' }] }],
      entry: [{ item: { reference: '#payer1', display: 'Example payer' } }],
    });
    expect(JSON.stringify(fhirList)).not.toContain('payer.example.org');
    expect((await fetch(`${url}/api/payers?_format=xml`)).status).toBe(400);
  });

  it('never wrote a secret, state or admin token to its log', () => {
    expect(server.output()).not.toContain(SECRET);
    expect(server.output()).not.toContain(ADMIN);
    expect(server.output()).not.toMatch(/state=/);
  });
});
