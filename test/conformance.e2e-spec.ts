import { randomBytes } from 'node:crypto';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EHR_HARNESS_PATH } from '../apps/sandbox/src/sandbox.js';
import { TestBrowser } from './support/browser.js';
import { launchBrowser } from './support/chromium.js';
import { hcpcsRules, type RunningDemo, startDemo } from './support/demo.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { ehrLaunchUrl, launchSession, prepareQuestionnaires } from './support/launch.js';

const ADMIN = randomBytes(24).toString('hex');
const SDC = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/';
const LIBRARY_URL = 'http://example.org/dtr/Library/RuntimeCheck';
const QUESTIONNAIRE_URL = 'http://example.org/dtr/Questionnaire/runtime-check';

/**
 * A CQL-only library (compiled here as it arrives) whose "Flow" define fails at run time for a patient with two
 * names (`singleton from` over more than one element), and whose "Birth" define works.
 */
const CQL = `library RuntimeCheck version '1.0.0'
using FHIR version '4.0.1'
context Patient
define "Flow": Length(singleton from (Patient.name N return N.family.value))
define "Birth": Patient.birthDate.value
`;
const cqlItem = (linkId: string, text: string, type: string, define: string) => ({
  linkId,
  text,
  type,
  extension: [
    {
      url: `${SDC}sdc-questionnaire-initialExpression`,
      valueExpression: { language: 'text/cql', expression: `RuntimeCheck."${define}"` },
    },
  ],
});
const PACKAGE = {
  Library: {
    resourceType: 'Library',
    id: 'runtime-check',
    url: LIBRARY_URL,
    version: '1.0.0',
    name: 'RuntimeCheck',
    status: 'active',
    type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/library-type', code: 'logic-library' }] },
    content: [{ contentType: 'text/cql', data: Buffer.from(CQL).toString('base64') }],
  },
  Questionnaire: {
    resourceType: 'Questionnaire',
    id: 'runtime-check',
    url: QUESTIONNAIRE_URL,
    version: '1.0.0',
    title: 'Runtime check',
    status: 'active',
    extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/cqf-library', valueCanonical: `${LIBRARY_URL}|1.0.0` }],
    item: [
      cqlItem('birth', 'Date of birth', 'date', 'Birth'),
      cqlItem('flow', 'Name length', 'integer', 'Flow'),
      { linkId: 'note', text: 'Notes', type: 'string' },
    ],
  },
};

/** PHI planted in the patient's record: none of it may reach the payer in an error report. */
const CANARY = {
  patient: 'canary-pt-7731',
  family: 'Canaryfamily',
  second: 'Canarysecond',
  given: 'Zedcanary',
  birthDate: '1944-04-04',
  coverage: 'canary-cov-88',
  order: 'canary-order-99',
};
const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    {
      resourceType: 'Patient',
      id: CANARY.patient,
      birthDate: CANARY.birthDate,
      name: [{ family: CANARY.family, given: [CANARY.given] }, { family: CANARY.second }],
    },
    { resourceType: 'Practitioner', id: 'cf-pr', name: [{ family: 'Ruiz', given: ['Dana'] }] },
    sandboxCoverage(CANARY.coverage, CANARY.patient),
    deviceOrder(CANARY.order, CANARY.patient, 'E0777'),
  ].map((resource) => ({ resource })),
};

type Json = Record<string, unknown>;
interface LoggedErrors {
  version: string;
  questionnaire: string;
  outcome: { issue: Array<{ severity: string; code: string; details?: Json; diagnostics?: string }> };
}

/**
 * Conformance over real HTTP: the built server and the sandbox EHR and payer (`npm start`): the supported payers
 * shape, `openid fhirUser` and the id_token checks, an unidentified author, `$log-questionnaire-errors` in each
 * DTR version without PHI (a runtime CQL failure included), and the launch token sent to a same-origin payer.
 */
describe('DTR conformance against the sandbox EHR and payer', () => {
  let demo: RunningDemo;
  let url: string;
  let fhirBase: string;
  let ehr: string;
  let payer: string;
  let browser: Browser | undefined;

  beforeAll(async () => {
    demo = await startDemo(
      inject('adminDatabaseUrl'),
      'dtr_conform',
      { DTR_ADMIN_TOKEN: ADMIN, DTR_PREFILL_WORKERS: '0' },
      {
        bundle: BUNDLE,
        packages: {
          'runtime-check': {
            ...PACKAGE,
            rules: hcpcsRules({ code: 'E0777', questionnaire: `${QUESTIONNAIRE_URL}|1.0.0` }),
          },
        },
      },
    );
    ({ url, fhirBase, ehr, payer } = demo);
    // Before any launch (the server caches discovery): an EHR whose smart-configuration has no OpenID Connect.
    await behave({ smartConfiguration: 'without-openid' });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
  });

  async function behave(behaviour: Json): Promise<void> {
    const res = await fetch(`${ehr}/_sandbox/auth-behaviour`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(behaviour),
    });
    expect(res.status, await res.text()).toBe(200);
  }

  const launchContext = () => ({
    patient: CANARY.patient,
    user: 'cf-pr',
    fhirContext: [{ reference: `DeviceRequest/${CANARY.order}` }],
  });
  const launched = () => launchSession(demo, launchContext());

  /** The questionnaires prepared for the sandbox payer (the answer groups them per payer). */
  function questionnairesOf(body: Json): Array<{ formId: string; issues: Array<{ code: string; define?: string }> }> {
    const payers = body['payers'] as Array<{ payer: { id: string }; questionnaires: unknown[] }>;
    return payers.find((p) => p.payer.id === 'sandbox-payer')!.questionnaires as ReturnType<typeof questionnairesOf>;
  }

  async function prepare(client: TestBrowser): Promise<{ status: number; body: Json }> {
    const res = await prepareQuestionnaires(demo, client);
    return { status: res.status, body: JSON.parse(res.body) as Json };
  }

  const admin = (method: string, route: string, body?: unknown) =>
    fetch(`${url}${route}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });

  async function registeredPayer(): Promise<Json> {
    const payers = (await (await admin('GET', '/admin/payers')).json()) as Json[];
    return payers.find((p) => p['id'] === 'sandbox-payer')!;
  }

  async function putPayer(changes: Json): Promise<Response> {
    return admin('PUT', '/admin/payers/sandbox-payer', { ...(await registeredPayer()), ...changes });
  }

  const ehrRequests = async () =>
    (await (await fetch(`${ehr}/_sandbox/requests`)).json()) as Array<{
      path: string;
      status?: number;
      query?: Record<string, string>;
      tokenFingerprint?: string;
      tokenIssuedHere?: boolean;
    }>;

  it('lists supported payers as the DTR IG defines the endpoint: {"payers":[{"id","name"}]}', async () => {
    const res = await fetch(`${url}/api/payers`, { headers: { accept: 'application/json' } });
    expect(res.status).toBe(200);
    // Each registered payer (npm start registers the sandbox's two) with its id and name, and nothing more.
    const body = (await res.json()) as { payers: Array<Record<string, unknown>> };
    expect(Object.keys(body)).toEqual(['payers']);
    expect(body.payers).toContainEqual({ id: 'sandbox-payer', name: 'Sandbox Health Plan' });
    for (const payer of body.payers) expect(Object.keys(payer).sort()).toEqual(['id', 'name']);
  });

  it('asks for openid fhirUser and gets fhirUser from an EHR whose smart-configuration lacks sso-openid-connect', async () => {
    const smart = (await (await fetch(`${fhirBase}/.well-known/smart-configuration`)).json()) as Json;
    expect(smart['capabilities']).not.toContain('sso-openid-connect');
    expect(smart['jwks_uri']).toBeUndefined();
    expect(smart['issuer']).toBeUndefined();
    await fetch(`${ehr}/_sandbox/requests`, { method: 'DELETE' });
    const client = await launched();
    const session = JSON.parse((await client.request(`${url}/api/session`)).body) as Json;
    expect(session['user']).toMatchObject({ fhirUser: `${fhirBase}/Practitioner/cf-pr` });
    const seen = await ehrRequests();
    const authorize = seen.find((r) => r.path === '/auth/auth' && r.query?.['scope']);
    expect(authorize?.query?.['scope']?.split(' ')).toEqual(expect.arrayContaining(['openid', 'fhirUser', 'launch']));
    // The keys came from the issuer's OpenID discovery document, since the SMART one names none.
    expect(seen.some((r) => r.path === '/auth/.well-known/openid-configuration' && r.status === 200)).toBe(true);
    expect(seen.some((r) => r.path === '/auth/jwks' && r.status === 200)).toBe(true);
    const page = await client.request(`${url}/app`);
    expect(page.body).toContain('Signed in as');
    expect(page.body).not.toContain('the author is unknown');
  });

  it('refuses an id_token whose signature is not by the issuer’s keys: error page, no session', async () => {
    await behave({ smartConfiguration: 'without-openid', idToken: 'foreign-key' });
    try {
      const client = new TestBrowser();
      const hops = await client.navigate(await ehrLaunchUrl(demo, launchContext()));
      const last = hops.at(-1)!;
      expect(last.status).toBe(403);
      expect(last.headers['content-type']).toMatch(/text\/html/);
      expect(last.body).toMatch(/failed validation: id_token signature/);
      expect(client.cookie(new URL(url).host, 'dtr_session')).toBeUndefined();
    } finally {
      await behave({ smartConfiguration: 'without-openid' });
    }
  });

  it('a launch without an id_token works, and /app and the form page say the author is unknown', async () => {
    await behave({ smartConfiguration: 'without-openid', idToken: 'omit' });
    let client: TestBrowser;
    try {
      client = await launched();
    } finally {
      await behave({ smartConfiguration: 'without-openid' });
    }
    const session = JSON.parse((await client.request(`${url}/api/session`)).body) as Json;
    expect(session['user']).toMatchObject({ fhirUser: null });
    const page = await client.request(`${url}/app`);
    expect(page.status).toBe(200);
    expect(page.body).toContain('The EHR did not identify the user: the author is unknown');
    const prepared = await prepare(client);
    expect(prepared.status, JSON.stringify(prepared.body)).toBe(200);
    const formId = questionnairesOf(prepared.body)[0]!.formId;
    const view = JSON.parse(
      (await client.request(`${url}/api/session/questionnaire-responses/${formId}`)).body,
    ) as Json;
    expect(view['author']).toEqual({ known: false });

    // The form page in a real browser, with the session's cookie.
    browser = await launchBrowser();
    const context = await browser.newContext();
    await context.addCookies([{ name: 'dtr_session', value: client.cookie(new URL(url).host, 'dtr_session')!, url }]);
    const tab = await context.newPage();
    await tab.goto(`${url}/app/questionnaires/${formId}`);
    await tab.waitForSelector('#form-container[data-rendered]', { timeout: 30_000 });
    expect(await tab.locator('#form-status').textContent()).toContain(
      'the EHR did not identify the user: the author is unknown',
    );
    // The item whose CQL failed carries a visible note: not prefilled, answer it by hand.
    const note = tab.locator('#issues li.prefill-failed[data-link-id="flow"]');
    expect(await note.isVisible()).toBe(true);
    expect(await note.textContent()).toContain('Name length: prefill did not happen for this item; answer it by hand');
    expect(await tab.locator('#issues li[data-link-id="birth"]').count()).toBe(0);
    await context.close();
  });

  for (const version of ['2.0.1', '2.1', '2.2'] as const) {
    it(`DTR ${version}: a runtime CQL failure is reported with $log-questionnaire-errors in the version's shape, once, without PHI`, async () => {
      const switched = await fetch(`${payer}/_sandbox/dtr-version`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ version }),
      });
      expect(switched.status).toBe(200);
      expect((await putPayer({ igVersion: version })).status).toBe(200);
      const before = ((await (await fetch(`${payer}/_sandbox/logged-errors`)).json()) as LoggedErrors[]).length;
      const client = await launched();
      const prepared = await prepare(client);
      expect(prepared.status, JSON.stringify(prepared.body)).toBe(200);
      const [form] = questionnairesOf(prepared.body);
      expect(form!.issues).toContainEqual(expect.objectContaining({ code: 'define-failed', define: 'Flow' }));
      // Preparing again in the same session reports nothing more.
      expect((await prepare(client)).status).toBe(200);

      const logged = ((await (await fetch(`${payer}/_sandbox/logged-errors`)).json()) as LoggedErrors[]).slice(before);
      expect(logged).toHaveLength(1);
      const [report] = logged;
      expect(report!.version).toBe(version);
      expect(report!.questionnaire).toBe(`${QUESTIONNAIRE_URL}|1.0.0`);
      const issues = report!.outcome.issue;
      expect(issues).toContainEqual(
        expect.objectContaining({
          severity: 'warning',
          code: 'exception',
          details: expect.objectContaining({ coding: [{ system: 'urn:dtr-backend:issue', code: 'define-failed' }] }),
        }),
      );
      const identity = issues.find((i) => i.code === 'informational')?.diagnostics ?? '';
      expect(identity).toMatch(/software=dtr-backend; version=\d+\.\d+\.\d+; time=\d{4}-\d\d-\d\dT[\d:.]+\+00:00/);
      const requests = (await (await fetch(`${payer}/_sandbox/requests`)).json()) as Array<{
        path: string;
        status?: number;
      }>;
      expect(requests.filter((r) => r.path.endsWith('$log-questionnaire-errors')).at(-1)).toMatchObject({
        path: '/fhir/Questionnaire/$log-questionnaire-errors',
        status: 200,
      });
      const received = JSON.stringify(report);
      for (const phi of Object.values(CANARY)) expect(received).not.toContain(phi);
      expect(received).not.toContain('1944');
    });
  }

  it('sends the launch token to a payer registered with tokenSource launch on the EHR origin, audited; refuses another origin', async () => {
    const original = await registeredPayer();
    try {
      const harness = `${ehr}${EHR_HARNESS_PATH}`;
      expect((await putPayer({ igVersion: '2.2', fhirBase: harness, tokenSource: 'launch' })).status).toBe(200);
      await fetch(`${ehr}/_sandbox/requests`, { method: 'DELETE' });
      const since = new Date(Date.now() - 1000).toISOString();
      const client = await launched();
      const prepared = await prepare(client);
      expect(prepared.status, JSON.stringify(prepared.body)).toBe(200);
      const calls = (await ehrRequests()).filter((r) => r.path.startsWith(EHR_HARNESS_PATH));
      expect(calls.map((c) => c.path)).toContain(`${EHR_HARNESS_PATH}/Questionnaire/$questionnaire-package`);
      // The token the harness got is one the EHR issued (the launch's), and nothing went to the payer's own host.
      expect(calls.every((c) => c.tokenIssuedHere === true && c.status === 200)).toBe(true);
      const audit = (await (
        await admin('GET', `/admin/audit?from=${encodeURIComponent(since)}&_count=1000`)
      ).json()) as {
        entry?: Array<{ resource: { subtype?: Array<{ code: string }> } }>;
      };
      const uses = (audit.entry ?? []).filter((e) => e.resource.subtype?.some((s) => s.code === 'payer-launch-token'));
      expect(uses.length).toBeGreaterThanOrEqual(1);

      // The same setting for a payer on another origin: refused at use, nothing sent there.
      expect((await putPayer({ fhirBase: original['fhirBase'], tokenSource: 'launch' })).status).toBe(200);
      const before = ((await (await fetch(`${payer}/_sandbox/requests`)).json()) as unknown[]).length;
      const refused = await prepare(await launched());
      expect(refused.status).toBe(403);
      expect(JSON.stringify(refused.body)).toContain("not on the origin of this session's EHR");
      expect(((await (await fetch(`${payer}/_sandbox/requests`)).json()) as unknown[]).length).toBe(before);
    } finally {
      const { tokenSource: _t, ...rest } = original;
      expect(
        (await admin('PUT', '/admin/payers/sandbox-payer', { ...rest, tokenSource: 'backend-services' })).status,
      ).toBe(200);
    }
  });
});
