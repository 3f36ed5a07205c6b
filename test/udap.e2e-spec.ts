import { spawnSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { launchSession, prepareForm } from './support/launch.js';
import { repoRoot, spawnServer, type SpawnedServer } from './support/processes.js';
import { leakedSecrets } from './support/secrets.js';

const ADMIN = randomBytes(24).toString('hex');
const KEYS = `k1:${randomBytes(32).toString('base64')}`;
const PASSPHRASE = `p12-${randomBytes(10).toString('hex')}`;
const COMMUNITY = 'urn:dtr-sandbox:udap-community';
const SUPPLEMENT = 'https://dtr.example.org/udap/supplement';
const DISCLOSE = 'https://dtr.example.org/udap/disclose';
const PAYERS = 'https://dtr.example.org/udap/payers';

const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resourceType: 'Patient', id: 'udap-p1', birthDate: '1950-02-03', name: [{ family: 'Adeyemi', given: ['Ola'] }] },
    { resourceType: 'Practitioner', id: 'udap-pr', name: [{ family: 'Moreau', given: ['Lea'] }] },
    sandboxCoverage('udap-cov', 'udap-p1'),
    deviceOrder('udap-order', 'udap-p1'),
    {
      resourceType: 'Condition',
      id: 'udap-copd',
      clinicalStatus: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }],
      },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '13645005' }] },
      subject: { reference: 'Patient/udap-p1' },
    },
  ].map((resource) => ({ resource })),
};

type Json = Record<string, unknown>;

/**
 * `fetch`, sent a second time when a GET, PUT or DELETE finds its pooled connection closed: the servers close idle
 * keep-alive connections while a command line runs, and the next request on that connection fails before it is sent.
 */
async function repeatable(target: string, init: RequestInit = {}): Promise<Response> {
  try {
    return await fetch(target, init);
  } catch (error) {
    if ((init.method ?? 'GET') === 'POST' || !(error instanceof TypeError)) throw error;
    return fetch(target, init);
  }
}
interface Logged {
  method: string;
  path: string;
  query: Record<string, string | string[]>;
  status?: number;
  clientId?: string;
  tokenIssuedHere?: boolean;
  grant?: { type: string; refreshTokenFingerprint?: string };
  udapAuthentication?: { header: Json; claims: Json; udap: string | null };
}

/** Whether the `x5c` of a UDAP authentication token starts with a certificate naming `san` as a SAN URI. */
const signedAs = (logged: Logged, san: string) =>
  new X509Certificate(Buffer.from((logged.udapAuthentication!.header['x5c'] as string[])[0]!, 'base64')).subjectAltName
    ?.split(', ')
    .includes(`URI:${san}`);

/**
 * UDAP end to end over real HTTP: our server and the sandbox (`npm start`), its EHR and payer in UDAP mode. Our
 * certificate (two SAN URIs, from the sandbox community's CA, as PKCS#12) and the community anchor are added; the
 * tenant's two identities and the payer are registered with `register-udap`; a launch (with Tiered OAuth) and a
 * package retrieval then authenticate with UDAP (the sandbox applies its UDAP checks to every `udap-` client, and its
 * request log names the client and shows the authentication token it accepted). The EHR's tokens live 10 seconds,
 * less than the 30 seconds before expiry at which a session renews them, so every use of a session's token refreshes it
 * (and the EHR rotates refresh tokens): refreshes are seen without waiting. The tenant then moves to system-level
 * disclosure over UDAP and a form is sent. Refusals on our side come from the sandbox's metadata fault modes. The sandbox's own
 * refusals of a replayed jti, a replayed statement and a statement with two grant types are in
 * apps/sandbox/src/udap/udap.e2e-spec.ts ("refuses authentication tokens: replayed jti…", "refuses a replayed software
 * statement", "refuses registrations, each naming its cause").
 */
describe('UDAP against the sandbox EHR and payer', () => {
  let db: ScratchDatabase;
  let dir: string;
  let app: SpawnedServer;
  let url: string;
  let ehrFhirBase: string;
  let ehr: string;
  let payer: string;
  const env: Record<string, string> = {};

  const admin = (method: string, route: string, body?: unknown) =>
    repeatable(`${url}${route}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const dtr = (...args: string[]) => {
    const run = spawnSync(process.execPath, [path.join(repoRoot, 'bin/dtr.mjs'), ...args], {
      cwd: repoRoot,
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/root', ...env },
      encoding: 'utf8',
    });
    return { code: run.status, stdout: run.stdout, stderr: run.stderr };
  };
  const requests = async (origin: string): Promise<Logged[]> =>
    (await (await repeatable(`${origin}/_sandbox/requests`)).json()) as Logged[];
  const faults = (origin: string, settings: Json) =>
    repeatable(`${origin}/_sandbox/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(settings),
    });

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_udap_e2e');
    dir = mkdtempSync(path.join(tmpdir(), 'dtr-udap-e2e-'));
    writeFileSync(path.join(dir, 'patient.json'), JSON.stringify(BUNDLE));
    Object.assign(env, {
      DATABASE_URL: db.url,
      DTR_ENCRYPTION_KEYS: KEYS,
      DTR_UDAP_CONTACT: 'mailto:ops@dtr.example.org',
      DTR_UDAP_LOGO_URI: 'https://dtr.example.org/logo.png',
      DTR_UDAP_ORGANIZATION_NAME: 'DTR test organization',
    });
    app = spawnServer(
      {
        ...env,
        DTR_PORT: '0',
        DTR_ADMIN_TOKEN: ADMIN,
        SANDBOX_EHR_PORT: '0',
        SANDBOX_PAYER_PORT: '0',
        SANDBOX_BUNDLES: path.join(dir, 'patient.json'),
        SANDBOX_TOKEN_TTL_SECONDS: '10',
        SANDBOX_ROTATE_REFRESH_TOKENS: '1',
      },
      'scripts/start.mjs',
    );
    url = await app.ready;
    const deadline = Date.now() + 30_000;
    while (!/Sandbox payer: (http:\/\/\S+)/.test(app.output()) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    ehrFhirBase = /Sandbox EHR: (http:\/\/\S+)/.exec(app.output())![1]!;
    ehr = new URL(ehrFhirBase).origin;
    payer = new URL(/Sandbox payer: (http:\/\/\S+)/.exec(app.output())![1]!).origin;
  });
  afterAll(async () => {
    app?.child.kill('SIGTERM');
    await app?.exited;
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('adds our certificate (two SAN URIs, PKCS#12) with the command line, a payer certificate with the admin API, and the community anchor', async () => {
    const p12 = await fetch(`${ehr}/udap/certificates`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sanUris: [SUPPLEMENT, DISCLOSE], format: 'pkcs12', passphrase: PASSPHRASE }),
    });
    expect(p12.status).toBe(201);
    writeFileSync(path.join(dir, 'ours.p12'), Buffer.from(await p12.arrayBuffer()));
    env['P12_PASS'] = PASSPHRASE;
    const added = dtr('udap', 'certs', 'add', '--p12', path.join(dir, 'ours.p12'), '--passphrase-env', 'P12_PASS');
    expect(added.code, added.stderr).toBe(0);
    expect(JSON.parse(added.stdout)).toMatchObject({ sanUris: [SUPPLEMENT, DISCLOSE] });
    expect(leakedSecrets(added.stdout + added.stderr, [PASSPHRASE])).toEqual([]);

    const pem = (await (
      await fetch(`${ehr}/udap/certificates`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sanUris: [PAYERS] }),
      })
    ).json()) as { certificatePem: string; privateKeyPem: string };
    const viaApi = await admin('POST', '/admin/udap/certificates', {
      certificatePem: pem.certificatePem,
      privateKeyPem: pem.privateKeyPem,
    });
    expect(viaApi.status).toBe(201);

    writeFileSync(path.join(dir, 'anchor.pem'), await (await fetch(`${ehr}/udap/anchor.pem`)).text());
    const anchor = dtr('udap', 'anchors', 'add', '--community', COMMUNITY, '--pem', path.join(dir, 'anchor.pem'));
    expect(anchor.code, anchor.stderr).toBe(0);
    expect(JSON.parse(anchor.stdout)).toMatchObject({ community: COMMUNITY, subject: 'CN=Sandbox UDAP Community' });
  });

  it.each([
    ['bad-signature', /does not verify with the key of its own certificate/],
    ['untrusted-anchor', /does not chain to a trusted anchor/],
    ['expired-certificate', /expired on/],
    ['san-mismatch', /names .*not-this-server/],
  ] as const)('refuses the EHR metadata with fault %s, saying why, and registers nothing', async (fault, why) => {
    expect((await faults(ehr, { udapMetadata: fault })).status).toBe(200);
    try {
      const before = (await requests(ehr)).filter((r) => r.path.endsWith('/register')).length;
      const response = await admin('POST', '/admin/udap/tenants/sandbox-ehr/supplement/registration', {
        san: SUPPLEMENT,
        community: COMMUNITY,
      });
      expect(response.status).toBe(502);
      const outcome = (await response.json()) as { issue: Array<{ diagnostics: string }> };
      const message = outcome.issue[0]!.diagnostics;
      expect(message).toContain(`the UDAP metadata of ${ehrFhirBase} was refused`);
      expect(message).toMatch(why);
      expect(message).toContain(`(udap: ${fault})`);
      expect((await requests(ehr)).filter((r) => r.path.endsWith('/register'))).toHaveLength(before);
    } finally {
      await faults(ehr, {});
    }
  });

  let supplementClient: string;
  let discloseClient: string;
  let payerClient: string;

  it('registers both tenant identities (one certificate) and the payer with register-udap', async () => {
    const supplement = dtr(
      'tenant',
      'register-udap',
      'sandbox-ehr',
      '--purpose',
      'supplement',
      '--san',
      SUPPLEMENT,
      '--community',
      COMMUNITY,
    );
    expect(supplement.code, supplement.stderr).toBe(0);
    const disclose = dtr(
      'tenant',
      'register-udap',
      'sandbox-ehr',
      '--purpose',
      'disclose',
      '--san',
      DISCLOSE,
      '--community',
      COMMUNITY,
    );
    expect(disclose.code, disclose.stderr).toBe(0);
    const payerRun = dtr('payer', 'register-udap', 'sandbox-payer', '--san', PAYERS, '--community', COMMUNITY);
    expect(payerRun.code, payerRun.stderr).toBe(0);
    const [s, d, p] = [supplement, disclose, payerRun].map((r) => JSON.parse(r.stdout) as Json);
    expect(s).toMatchObject({ status: 'registered', grantType: 'authorization_code' });
    expect(d).toMatchObject({ status: 'registered', grantType: 'authorization_code' });
    expect(p).toMatchObject({ status: 'registered', grantType: 'client_credentials' });
    supplementClient = s!['clientId'] as string;
    discloseClient = d!['clientId'] as string;
    payerClient = p!['clientId'] as string;
    expect(new Set([supplementClient, discloseClient, payerClient]).size).toBe(3);
    // The sandbox logged each registration with the client it made.
    expect(
      (await requests(ehr)).filter((r) => r.path.endsWith('/register') && r.status === 201).map((r) => r.clientId),
    ).toEqual(expect.arrayContaining([supplementClient, discloseClient]));
    const tenant = (await (await admin('GET', '/admin/tenants/sandbox-ehr')).json()) as {
      registrations: Array<{ purpose: string; authMethod: string; udapSan: string; clientId: string }>;
    };
    expect(tenant.registrations.map((r) => [r.purpose, r.authMethod, r.udapSan, r.clientId])).toEqual([
      ['disclose', 'udap', DISCLOSE, discloseClient],
      ['supplement', 'udap', SUPPLEMENT, supplementClient],
    ]);
  });

  it('a second registration modifies it: the client id is kept', async () => {
    const response = await admin('POST', '/admin/udap/tenants/sandbox-ehr/supplement/registration', {
      san: SUPPLEMENT,
      community: COMMUNITY,
      clientName: 'DTR (renamed)',
    });
    expect(response.status).toBe(201);
    expect(await response.json()).toMatchObject({
      status: 'modified',
      clientId: supplementClient,
      previousClientId: supplementClient,
    });
  });

  it('launches with UDAP (Tiered OAuth idp sent, the EHR offering udap_to) and retrieves the package from the payer with a UDAP Backend Services token', async () => {
    const view = (await (await admin('GET', '/admin/tenants/sandbox-ehr')).json()) as Json & {
      registrations: Array<Json & { purpose: string }>;
    };
    const registration = (purpose: string) => {
      const r = view.registrations.find((x) => x.purpose === purpose)!;
      return {
        clientId: r['clientId'],
        authMethod: 'udap',
        udapSan: r['udapSan'],
        scopes: r['scopes'],
        redirectUri: r['redirectUri'],
      };
    };
    const put = await admin('PUT', '/admin/tenants/sandbox-ehr', {
      name: view['name'],
      fhirBase: view['fhirBase'],
      discloseMode: view['discloseMode'],
      udapIdp: `${ehr}/idp`,
      supplement: registration('supplement'),
      disclose: registration('disclose'),
    });
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({ udapIdp: `${ehr}/idp` });
    await repeatable(`${ehr}/_sandbox/requests`, { method: 'DELETE' });
    await repeatable(`${payer}/_sandbox/requests`, { method: 'DELETE' });

    const created = await fetch(`${ehr}/_sandbox/launches`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        patient: 'udap-p1',
        user: 'pr-1',
        fhirContext: [{ reference: 'DeviceRequest/udap-order' }, { reference: 'Coverage/udap-cov' }],
      }),
    });
    expect(created.status).toBe(200);
    const { launch } = (await created.json()) as { launch: string };
    const browser = new TestBrowser();
    const hops = await browser.navigate(`${url}/launch?iss=${encodeURIComponent(ehrFhirBase)}&launch=${launch}`);
    expect(hops[hops.length - 1]!.url, JSON.stringify(hops.map((h) => h.url))).toBe(`${url}/app`);

    const ehrLog = await requests(ehr);
    const authorize = ehrLog.find((r) => r.method === 'GET' && r.query['client_id'] === supplementClient)!;
    expect(authorize.query['idp']).toBe(`${ehr}/idp`);
    expect(String(authorize.query['scope']).split(' ')).toEqual(expect.arrayContaining(['openid', 'udap']));
    expect(ehrLog.some((r) => r.path.startsWith('/idp/'))).toBe(true);
    // The code was exchanged once; the sandbox lets a `udap-` client have tokens only with a UDAP assertion, and the
    // EHR's FHIR reads carry a token issued to our UDAP supplement client.
    const ehrTokens = ehrLog.filter(
      (r) => r.method === 'POST' && r.path.endsWith('/token') && !r.path.startsWith('/idp'),
    );
    expect(ehrTokens.map((r) => r.status)).toEqual(ehrTokens.map(() => 200));
    expect(ehrTokens.filter((r) => r.grant?.type === 'authorization_code')).toHaveLength(1);
    const reads = ehrLog.filter((r) => r.path.startsWith('/fhir/') && r.tokenIssuedHere);
    expect(reads.length).toBeGreaterThan(0);
    expect(new Set(reads.map((r) => r.clientId))).toEqual(new Set([supplementClient]));

    const prepared = await browser.request(`${url}/api/session/questionnaires`, { method: 'POST' });
    expect(prepared.status, prepared.body).toBe(200);
    const payerLog = await requests(payer);
    const payerTokens = payerLog.filter((r) => r.method === 'POST' && r.path.endsWith('/token'));
    expect(payerTokens.map((r) => [r.clientId, r.status])).toEqual([[payerClient, 200]]);
    const operations = payerLog.filter((r) => r.path.endsWith('$questionnaire-package'));
    expect(operations.map((r) => [r.clientId, r.status])).toEqual([[payerClient, 200]]);
  });

  const target = () => ({ url, fhirBase: ehrFhirBase });
  const context = {
    patient: 'udap-p1',
    user: 'pr-1',
    fhirContext: [{ reference: 'DeviceRequest/udap-order' }, { reference: 'Coverage/udap-cov' }],
  };
  const ehrTokenRequests = (log: Logged[]) => log.filter((r) => r.method === 'POST' && r.path === '/auth/token');

  it('a UDAP-launched session refreshes its EHR token with the refresh_token grant and a UDAP assertion; each rotated refresh token is spent once', async () => {
    await repeatable(`${ehr}/_sandbox/requests`, { method: 'DELETE' });
    const browser = await launchSession(target(), context);
    await prepareForm(target(), browser);

    const log = await requests(ehr);
    const [exchange, ...refreshes] = ehrTokenRequests(log);
    expect(exchange).toMatchObject({
      status: 200,
      grant: { type: 'authorization_code' },
      udapAuthentication: { udap: '1', claims: { iss: supplementClient } },
    });
    expect(refreshes.length).toBeGreaterThan(0);
    for (const refresh of refreshes) {
      expect(refresh).toMatchObject({
        status: 200,
        grant: { type: 'refresh_token', refreshTokenFingerprint: expect.any(String) },
        udapAuthentication: {
          udap: '1',
          claims: { iss: supplementClient, sub: supplementClient, aud: `${ehr}/auth/token` },
        },
      });
      // A user-facing client's assertion: no hl7-b2b (that is for client_credentials).
      expect(refresh.udapAuthentication!.claims).not.toHaveProperty('extensions');
      expect(signedAs(refresh, SUPPLEMENT)).toBe(true);
    }
    // Each refresh presented the refresh token the one before it was given: none twice (a reuse revokes the grant).
    const presented = refreshes.map((r) => r.grant!.refreshTokenFingerprint);
    expect(new Set(presented).size).toBe(presented.length);
    const reads = log.filter((r) => r.path.startsWith('/fhir/'));
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.filter((r) => !(r.tokenIssuedHere && r.clientId === supplementClient && r.status === 200))).toEqual(
      [],
    );
  });

  it('discloses at system level over UDAP: the disclose identity, registered again for client_credentials, asks its tokens with hl7-b2b, writes the EHR copy, and the form reaches the payer', async () => {
    const view = (await (await admin('GET', '/admin/tenants/sandbox-ehr')).json()) as Json & {
      registrations: Array<Json & { purpose: string }>;
    };
    const supplement = view.registrations.find((r) => r.purpose === 'supplement')!;
    const scopes = ['system/QuestionnaireResponse.cu', 'system/DocumentReference.c', 'system/Provenance.c'];
    const put = await admin('PUT', '/admin/tenants/sandbox-ehr', {
      name: view['name'],
      fhirBase: view['fhirBase'],
      discloseMode: 'system',
      udapIdp: view['udapIdp'],
      supplement: {
        clientId: supplementClient,
        authMethod: 'udap',
        udapSan: SUPPLEMENT,
        scopes: supplement['scopes'],
        redirectUri: supplement['redirectUri'],
      },
      disclose: {
        clientId: discloseClient,
        authMethod: 'udap',
        udapSan: DISCLOSE,
        scopes,
        redirectUri: view.registrations.find((r) => r.purpose === 'disclose')!['redirectUri'],
      },
    });
    expect(put.status, await put.clone().text()).toBe(200);
    const again = dtr('tenant', 'register-udap', 'sandbox-ehr', '--purpose', 'disclose', '--san', DISCLOSE);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({
      status: 'modified',
      grantType: 'client_credentials',
      clientId: discloseClient,
    });

    await repeatable(`${ehr}/_sandbox/requests`, { method: 'DELETE' });
    const browser = await launchSession(target(), context);
    const { formId } = await prepareForm(target(), browser);
    const api = (suffix = '') => `${url}/api/session/questionnaire-responses/${formId}${suffix}`;
    const { response } = JSON.parse((await browser.request(api())).body) as { response: Json & { item?: Json[] } };
    response.item = [
      ...(response.item ?? []).filter((i) => i['linkId'] !== 'delivery-system'),
      {
        linkId: 'delivery-system',
        answer: [{ valueCoding: { system: 'http://example.org/dtr/CodeSystem/oxygen-delivery', code: 'liquid' } }],
      },
    ];
    const completed = await browser.request(api('/$complete'), {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(response),
    });
    expect(completed.status, completed.body).toBe(200);
    const sent = await browser.request(api('/$send'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ choices: {} }),
    });
    expect(sent.status, sent.body).toBe(202);
    const submission = (JSON.parse(sent.body) as { id: string }).id;
    let state = '';
    for (const deadline = Date.now() + 20_000; !['delivered', 'dead'].includes(state) && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 100));
      state = (JSON.parse((await browser.request(`${url}/api/session/submissions/${submission}`)).body) as Json)[
        'state'
      ] as string;
    }
    expect(state).toBe('delivered');

    const log = await requests(ehr);
    const systemTokens = ehrTokenRequests(log).filter((r) => r.grant?.type === 'client_credentials');
    expect(systemTokens.length).toBeGreaterThan(0);
    for (const token of systemTokens) {
      expect(token).toMatchObject({
        status: 200,
        udapAuthentication: {
          udap: '1',
          claims: {
            iss: discloseClient,
            sub: discloseClient,
            aud: `${ehr}/auth/token`,
            extensions: {
              'hl7-b2b': {
                version: '1',
                organization_id: expect.any(String),
                organization_name: 'DTR test organization',
                purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
              },
            },
          },
        },
      });
      expect(signedAs(token, DISCLOSE)).toBe(true);
    }
    // The copy was written into the EHR with the system disclose token of our UDAP disclose client.
    const writes = log.filter((r) => r.path.startsWith('/fhir') && ['POST', 'PUT'].includes(r.method));
    expect(writes.filter((r) => r.clientId === discloseClient).length).toBeGreaterThan(0);
    expect(writes.filter((r) => r.status! >= 300)).toEqual([]);
    const copies = (await (await repeatable(`${ehr}/_sandbox/store/DocumentReference`)).json()) as {
      entry?: Array<{ resource: { identifier?: Array<{ value: string }> } }>;
    };
    expect((copies.entry ?? []).filter((e) => e.resource.identifier?.some((i) => i.value === submission))).toHaveLength(
      1,
    );
  });

  it('cancels the payer and the disclose registrations: the clinician is told the payer cannot be reached until an administrator registers again, the log says what to run', async () => {
    const payerCancel = dtr('payer', 'register-udap', 'sandbox-payer', '--cancel');
    expect(payerCancel.code, payerCancel.stderr).toBe(0);
    expect(JSON.parse(payerCancel.stdout)).toMatchObject({ status: 'cancelled' });
    const discloseCancel = dtr('tenant', 'register-udap', 'sandbox-ehr', '--purpose', 'disclose', '--cancel');
    expect(discloseCancel.code, discloseCancel.stderr).toBe(0);
    const tenant = (await (await admin('GET', '/admin/tenants/sandbox-ehr')).json()) as {
      registrations: Array<{ purpose: string }>;
    };
    expect(tenant.registrations.map((r) => r.purpose)).toEqual(['supplement']);

    await repeatable(`${payer}/_sandbox/requests`, { method: 'DELETE' });
    const browser = await launchSession(target(), context);
    const told =
      "Sandbox Health Plan cannot be reached: this service's registration with this payer was cancelled, and an administrator must register it again";
    const prepared = await browser.request(`${url}/api/session/questionnaires`, { method: 'POST' });
    expect(prepared.status).toBe(500);
    const outcome = JSON.parse(prepared.body) as { issue: Array<{ code: string; diagnostics: string }> };
    expect(outcome.issue).toHaveLength(1);
    expect(outcome.issue[0]!.diagnostics).toMatch(new RegExp(`^${told} \\(request id [0-9a-f-]{36}\\)$`));
    const page = await browser.request(`${url}/app/questionnaires`, { method: 'POST' });
    expect(page.status).toBe(500);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.body).toContain(`<p id="message">${told.replace("'", '&#39;')} (request id `);
    // Neither answer carries the operator's instructions.
    for (const seen of [prepared.body, page.body]) expect(seen).not.toMatch(/register-udap|--san|dtr payer/);
    // The log line of that request id has them.
    const requestId = /\(request id ([0-9a-f-]{36})\)/.exec(outcome.issue[0]!.diagnostics)![1]!;
    const logged = app
      .output()
      .split('\n')
      .find((line) => line.includes(requestId) && line.includes('was cancelled'));
    expect(logged).toContain('our UDAP client at payer sandbox-payer was cancelled on');
    expect(logged).toContain('register again with \\"dtr payer register-udap sandbox-payer --san <uri>\\"');
    expect((await requests(payer)).filter((r) => r.method === 'POST' && r.path.endsWith('/token'))).toEqual([]);

    // A patient also covered by the second payer (registered with private_key_jwt): its questionnaires come, and the
    // cancelled payer's part says the same plain words (the operator's log has the whole message).
    const both = await launchSession(target(), {
      patient: 'pat-two-payers',
      user: 'pr-1',
      fhirContext: [{ reference: 'DeviceRequest/dr-pat-two-payers-1' }],
    });
    const two = await both.request(`${url}/api/session/questionnaires`, { method: 'POST' });
    expect(two.status, two.body).toBe(200);
    const parts = (
      JSON.parse(two.body) as { payers: Array<{ payer: { id: string }; error?: string; questionnaires: unknown[] }> }
    ).payers;
    expect(parts.map((p) => [p.payer.id, p.error, p.questionnaires.length > 0])).toEqual([
      ['sandbox-payer', told, false],
      ['sandbox-payer-2', undefined, true],
    ]);
    const twoPage = await both.request(`${url}/app/questionnaires`, { method: 'POST' });
    expect(twoPage.status).toBe(200);
    expect(twoPage.body).toContain(
      `<p class="payer-error" role="alert">Could not get this payer's questionnaires: ${told.replace("'", '&#39;')}</p>`,
    );
    expect(twoPage.body).not.toMatch(/register-udap|--san|dtr payer/);
    expect(
      app
        .output()
        .split('\n')
        .filter((line) => line.includes('"payerId":"sandbox-payer"') && line.includes('dtr payer register-udap')),
    ).toHaveLength(2);
  });
});
