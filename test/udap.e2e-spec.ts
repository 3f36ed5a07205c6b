import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
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
}

/**
 * UDAP end to end over real HTTP: our server and the sandbox (`npm start`), its EHR and payer in UDAP mode. Our
 * certificate (two SAN URIs, from the sandbox community's CA, as PKCS#12) and the community anchor are added; the
 * tenant's two identities and the payer are registered with `register-udap`; a launch (with Tiered OAuth) and a
 * package retrieval then authenticate with UDAP (the sandbox applies its UDAP checks to every `udap-` client, and its
 * request log names the client). Refusals on our side come from the sandbox's metadata fault modes. The sandbox's own
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
    expect(ehrTokens.map((r) => r.status)).toEqual([200]);
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

  it('cancels the payer and the disclose registrations: token requests to the payer then fail here with what to run', async () => {
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
    const created = await fetch(`${ehr}/_sandbox/launches`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        patient: 'udap-p1',
        user: 'pr-1',
        fhirContext: [{ reference: 'DeviceRequest/udap-order' }, { reference: 'Coverage/udap-cov' }],
      }),
    });
    const { launch } = (await created.json()) as { launch: string };
    const browser = new TestBrowser();
    await browser.navigate(`${url}/launch?iss=${encodeURIComponent(ehrFhirBase)}&launch=${launch}`);
    const prepared = await browser.request(`${url}/api/session/questionnaires`, { method: 'POST' });
    // A configuration problem: the clinician sees a request id, the operator's log says what to run.
    expect(prepared.status).toBe(500);
    const requestId = /quote request id ([0-9a-f-]{36})/.exec(prepared.body)![1]!;
    const logged = app
      .output()
      .split('\n')
      .find((line) => line.includes(requestId) && line.includes('was cancelled'));
    expect(logged).toContain('our UDAP client at payer sandbox-payer was cancelled on');
    expect(logged).toContain('register again with \\"dtr payer register-udap sandbox-payer --san <uri>\\"');
    expect((await requests(payer)).filter((r) => r.method === 'POST' && r.path.endsWith('/token'))).toEqual([]);
  });
});
