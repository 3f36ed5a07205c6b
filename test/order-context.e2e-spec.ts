import pg from 'pg';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { launchBrowser } from './support/chromium.js';
import { type RunningDemo, startDemo } from './support/demo.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { ehrLaunchUrl, launchSession, prepareQuestionnaires } from './support/launch.js';

const ADMIN_TOKEN = 'order-context-admin-token-0123456789abcdef';
const CRD = 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information';
const COPD = { system: 'http://snomed.info/sct', code: '13645005' };

/** A home-oxygen order whose CRD coverage-information names one coverage and its coverage-assertion id. */
function orderWithCoverageInformation(id: string, patient: string, coverage: string, assertion: string) {
  return {
    ...deviceOrder(id, patient),
    extension: [
      {
        url: CRD,
        extension: [
          { url: 'coverage', valueReference: { reference: coverage } },
          { url: 'covered', valueCode: 'conditional' },
          { url: 'coverage-assertion-id', valueString: assertion },
        ],
      },
    ],
  };
}

/**
 * oc-p1: two coverages with the sandbox payer, an active order, a completed one, an order whose coverage-information
 * names the second coverage, and a Task whose focus is the active order. oc-p2: another patient's order. oc-p3: a
 * coverage whose payor identifier is the sandbox payer's value without its system.
 */
const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resourceType: 'Patient', id: 'oc-p1', birthDate: '1949-02-03', name: [{ family: 'Lindqvist', given: ['Eva'] }] },
    { resourceType: 'Patient', id: 'oc-p2', birthDate: '1950-01-01', name: [{ family: 'Other', given: ['Ola'] }] },
    { resourceType: 'Patient', id: 'oc-p3', birthDate: '1951-01-01', name: [{ family: 'Bare', given: ['Bo'] }] },
    sandboxCoverage('oc-cov-a', 'oc-p1'),
    sandboxCoverage('oc-cov-b', 'oc-p1'),
    sandboxCoverage('oc-cov-p2', 'oc-p2'),
    {
      resourceType: 'Coverage',
      id: 'oc-cov-bare',
      status: 'active',
      beneficiary: { reference: 'Patient/oc-p3' },
      payor: [{ identifier: { value: 'SANDBOX-PAYER' } }],
    },
    deviceOrder('oc-order', 'oc-p1'),
    { ...deviceOrder('oc-order-done', 'oc-p1'), status: 'completed' },
    orderWithCoverageInformation('oc-order-ci', 'oc-p1', 'Coverage/oc-cov-b', 'CRD-OC-B'),
    deviceOrder('oc-p2-order', 'oc-p2'),
    deviceOrder('oc-p3-order', 'oc-p3'),
    {
      resourceType: 'Task',
      id: 'oc-task',
      status: 'requested',
      intent: 'order',
      for: { reference: 'Patient/oc-p1' },
      focus: { reference: 'DeviceRequest/oc-order' },
    },
    { resourceType: 'Condition', id: 'oc-c1', subject: { reference: 'Patient/oc-p1' }, code: { coding: [COPD] } },
    { resourceType: 'Patient', id: 'oc-p4', birthDate: '1947-04-04', name: [{ family: 'Resume', given: ['Rita'] }] },
    sandboxCoverage('oc-cov-p4', 'oc-p4'),
    deviceOrder('oc-p4-order', 'oc-p4'),
    {
      resourceType: 'QuestionnaireResponse',
      id: 'oc-qr4',
      status: 'in-progress',
      questionnaire: 'http://example.org/dtr/Questionnaire/home-oxygen|1.0.0',
      subject: { reference: 'Patient/oc-p4' },
      extension: [
        {
          url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context',
          valueReference: { reference: 'DeviceRequest/oc-p4-order' },
        },
      ],
    },
  ].map((resource) => ({ resource })),
};

interface LoggedRequest {
  path: string;
  method: string;
  query: Record<string, string>;
  coverages?: string[];
  context?: string;
}

interface PayerPart {
  payer: { id: string; name: string };
  coverages: string[];
  coverageAssertion?: string;
  questionnaires: Array<{ formId: string; questionnaire: string; questionnaireResponse: unknown }>;
  error?: string;
}
interface Prepared {
  orders: string[];
  payers: PayerPart[];
  unmatchedCoverages: string[];
}

/**
 * Where the DTR context comes from in every real shape, over real HTTP against `npm start` (server, sandbox EHR,
 * sandbox payer and the second sandbox payer): the order picker after a standalone launch (in a real browser and as
 * JSON), an order's coverage-information, a Task, an Encounter as the order, and a patient covered by two payers.
 */
describe('order context: picker, Task, coverage-information, one package per payer', () => {
  let demo: RunningDemo;
  let url: string;
  let ehr: string;
  let payers: { first: string; second: string };
  let browser: Browser;

  beforeAll(async () => {
    demo = await startDemo(
      inject('adminDatabaseUrl'),
      'dtr_order_ctx',
      { DTR_ADMIN_TOKEN: ADMIN_TOKEN },
      { bundle: BUNDLE },
    );
    ({ url, ehr } = demo);
    payers = {
      first: demo.payer,
      second: new URL(/Second sandbox payer: (http:\/\/\S+)/.exec(demo.app.output())![1]!).origin,
    };
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
  });

  const log = async (origin: string): Promise<LoggedRequest[]> =>
    (await (await fetch(`${origin}/_sandbox/requests`)).json()) as LoggedRequest[];
  const packageRequests = async (origin: string, after: number) =>
    (await log(origin)).slice(after).filter((e) => e.path.endsWith('/Questionnaire/$questionnaire-package'));

  /** An EHR launch (POST /_sandbox/launches) followed to /app in a cookie-keeping client. */
  const ehrLaunch = (patient: string, fhirContext: unknown[]) =>
    launchSession(demo, { patient, user: 'pr-1', fhirContext });

  /** A standalone launch (`launch/patient`): the user picks the patient at the EHR; nothing else is in context. */
  async function standaloneLaunch(patient: string): Promise<TestBrowser> {
    const client = new TestBrowser();
    const hops = await client.navigate(`${url}/launch/standalone?tenant=sandbox-ehr`);
    const picker = hops.at(-1)!;
    const action = new RegExp(
      `<form method="post" action="([^"]+)"><input type="hidden" name="patient" value="${patient}">`,
    ).exec(picker.body)?.[1];
    expect(action, picker.body.slice(0, 300)).toBeDefined();
    const after = await client.navigate(new URL(action!, picker.url).toString(), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `patient=${patient}`,
    });
    expect(after.at(-1)!.url).toBe(`${url}/app`);
    return client;
  }

  const prepare = async (client: TestBrowser) => {
    const response = await prepareQuestionnaires(demo, client);
    return { status: response.status, body: JSON.parse(response.body) as Prepared & { issue?: unknown[] } };
  };

  it('standalone launch in a real browser: the order picker leads to the prefilled questionnaire', async () => {
    const ehrMark = (await log(ehr)).length;
    const page = await browser.newPage();
    await page.goto(`${url}/launch/standalone?tenant=sandbox-ehr`);
    await page.locator('form:has(input[name="patient"][value="oc-p1"]) button').click();
    await page.waitForURL(/\/app$/);
    // The launch named no order: the picker offers the patient's active orders, not the completed one nor others'.
    await expect(page.locator('#order-picker h2').textContent()).resolves.toBe('Which order needs documentation?');
    const offered = await page
      .locator('#choose-order input[name="order"]')
      .evaluateAll((inputs) => inputs.map((i) => i.getAttribute('value')));
    expect(offered.sort()).toEqual(['DeviceRequest/oc-order', 'DeviceRequest/oc-order-ci']);
    expect(await page.locator('#prepare').count()).toBe(0);
    await page.locator('input[name="order"][value="DeviceRequest/oc-order"]').check();
    await page.locator('#choose').click();
    await page.waitForURL(/\/app\/questionnaires$/);
    expect(await page.locator('h1').textContent()).toBe('Questionnaires for DeviceRequest/oc-order');
    const section = page.locator('section.payer[data-payer-id="sandbox-payer"]');
    expect(await section.locator('h2').textContent()).toBe('Questionnaires from Sandbox Health Plan');
    await expect(section.locator('tr[data-link-id="birth-date"] td.answer').textContent()).resolves.toBe('1949-02-03');
    // The form was opened for the chosen order, and the choice stays on the session (a reload of /app shows it).
    const forms = (await (await page.request.get(`${url}/api/session/questionnaire-responses`)).json()) as {
      responses: Array<{ status: string; payer: { id: string } }>;
    };
    expect(forms.responses).toEqual([expect.objectContaining({ status: 'not-started' })]);
    await page.goto(`${url}/app`);
    expect(await page.locator('input[name="order"][value="DeviceRequest/oc-order"]').isChecked()).toBe(true);
    await page.close();

    // The picker's searches went to the EHR with the launch token, each scoped to the patient.
    const searches = (await log(ehr))
      .slice(ehrMark)
      .filter((e) => e.method === 'GET' && /^\/fhir\/[A-Za-z]+$/.test(e.path));
    for (const type of ['DeviceRequest', 'ServiceRequest', 'MedicationRequest', 'NutritionOrder', 'Appointment'])
      expect(searches.find((e) => e.path === `/fhir/${type}`)?.query).toMatchObject({ patient: 'oc-p1' });
    expect(searches.find((e) => e.path === '/fhir/Encounter')?.query).toMatchObject({
      patient: 'oc-p1',
      status: 'in-progress,planned',
    });
    expect(searches.every((e) => e.query['patient'] === 'oc-p1' || e.query['subject'] === 'Patient/oc-p1')).toBe(true);
  });

  it('JSON: refuses an order that is not the patient’s (and malformed or finished ones); the chosen order’s coverage-information decides the coverage and assertion id', async () => {
    const client = await standaloneLaunch('oc-p1');
    const before = await prepare(client);
    expect(before.status).toBe(409);
    expect(JSON.stringify(before.body)).toContain('GET /api/session/order-candidates');

    const candidates = JSON.parse((await client.request(`${url}/api/session/order-candidates`)).body) as {
      orderInContext: boolean;
      candidates: Array<{ reference: string; status: string; description: string | null }>;
      issues: unknown[];
    };
    expect(candidates.orderInContext).toBe(false);
    expect(candidates.issues).toEqual([]);
    expect(candidates.candidates.map((c) => c.reference).sort()).toEqual([
      'DeviceRequest/oc-order',
      'DeviceRequest/oc-order-ci',
    ]);

    const choose = (order: unknown) =>
      client.request(`${url}/api/session/context`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ order }),
      });
    const foreign = await choose('DeviceRequest/oc-p2-order');
    expect(foreign.status).toBe(403);
    expect(foreign.body).toContain('is not an order of the patient in context');
    expect((await choose('DeviceRequest/oc-order-done')).status).toBe(409);
    expect((await choose('Patient/oc-p1')).status).toBe(400);
    expect((await choose('https://elsewhere.example.org/fhir/DeviceRequest/oc-order')).status).toBe(400);
    expect((await choose('DeviceRequest/missing')).status).toBe(404);
    // Nothing was recorded by the refused choices.
    const session = JSON.parse((await client.request(`${url}/api/session`)).body) as { orders: string[] };
    expect(session.orders).toEqual([]);

    const chosen = await choose('DeviceRequest/oc-order-ci');
    expect(chosen.status, chosen.body).toBe(200);
    expect(JSON.parse(chosen.body)).toEqual({ chosen: { order: 'DeviceRequest/oc-order-ci' } });
    // The choice is stored sealed with the session, never in plain text.
    const db = new pg.Client({ connectionString: demo.db.url });
    await db.connect();
    const contexts = (await db.query<{ context: string }>('SELECT context::text AS context FROM app_session')).rows;
    await db.end();
    expect(contexts.some((r) => r.context.includes('"chosenSealed"'))).toBe(true);
    expect(contexts.filter((r) => r.context.includes('oc-order-ci'))).toEqual([]);
    const mark = (await log(payers.first)).length;
    const prepared = await prepare(client);
    expect(prepared.status, JSON.stringify(prepared.body)).toBe(200);
    expect(prepared.body.orders).toEqual(['DeviceRequest/oc-order-ci']);
    expect(prepared.body.payers).toEqual([
      expect.objectContaining({
        payer: { id: 'sandbox-payer', name: 'Sandbox Health Plan' },
        coverages: ['Coverage/oc-cov-b'],
        coverageAssertion: 'CRD-OC-B',
      }),
    ]);
    // The payer received that coverage (not the patient's other one) and the assertion id as context.
    const requests = await packageRequests(payers.first, mark);
    expect(requests.map((r) => ({ coverages: r.coverages, context: r.context }))).toEqual([
      { coverages: ['Coverage/oc-cov-b'], context: 'CRD-OC-B' },
    ]);
  });

  it('the picker offers an in-progress response to resume: choosing it continues that response for its order', async () => {
    const client = await standaloneLaunch('oc-p4');
    const { candidates } = JSON.parse((await client.request(`${url}/api/session/order-candidates`)).body) as {
      candidates: Array<{ reference: string; order?: string }>;
    };
    expect(candidates).toContainEqual(
      expect.objectContaining({ reference: 'QuestionnaireResponse/oc-qr4', order: 'DeviceRequest/oc-p4-order' }),
    );
    const chosen = await client.request(`${url}/api/session/context`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ order: 'QuestionnaireResponse/oc-qr4' }),
    });
    expect(JSON.parse(chosen.body)).toEqual({
      chosen: { order: 'DeviceRequest/oc-p4-order', questionnaireResponse: 'QuestionnaireResponse/oc-qr4' },
    });
    const prepared = await prepare(client);
    expect(prepared.status, JSON.stringify(prepared.body)).toBe(200);
    expect(prepared.body.orders).toEqual(['DeviceRequest/oc-p4-order']);
    expect(prepared.body.payers[0]!.questionnaires[0]).toMatchObject({
      formStatus: 'in-progress',
      resumedFrom: 'QuestionnaireResponse/oc-qr4',
    });
  });

  it('a patient covered by two payers: one package request per payer with only its own coverage; the page groups per payer', async () => {
    const marks = { first: (await log(payers.first)).length, second: (await log(payers.second)).length };
    const launch = await ehrLaunchUrl(demo, {
      patient: 'pat-two-payers',
      user: 'pr-1',
      fhirContext: [{ reference: 'DeviceRequest/dr-pat-two-payers-1' }],
    });
    const page = await browser.newPage();
    await page.goto(launch);
    await page.waitForURL(/\/app$/);
    expect(await page.locator('#order-picker').count()).toBe(0);
    await page.locator('#prepare').click();
    await page.waitForURL(/\/app\/questionnaires$/);
    expect(
      await page.locator('section.payer').evaluateAll((s) => s.map((e) => e.getAttribute('data-payer-id'))),
    ).toEqual(['sandbox-payer', 'sandbox-payer-2']);
    expect(await page.locator('section.payer h2').allTextContents()).toEqual([
      'Questionnaires from Sandbox Health Plan',
      'Questionnaires from Second Sandbox Health Plan',
    ]);
    for (const [payer, coverage] of [
      ['sandbox-payer', 'cov-two-payers-1'],
      ['sandbox-payer-2', 'cov-two-payers-2'],
    ] as const) {
      const section = page.locator(`section.payer[data-payer-id="${payer}"]`);
      expect(await section.locator('.payer-coverages').textContent()).toContain(`Coverage/${coverage}`);
      expect(await section.locator('section.questionnaire h3').first().textContent()).toContain('home-oxygen');
      await expect(section.locator('tr[data-link-id="birth-date"] td.answer').textContent()).resolves.toBe(
        '1946-05-17',
      );
    }
    // One form per payer, each tied to its payer (the forms lifecycle per payer).
    const forms = (await (await page.request.get(`${url}/api/session/questionnaire-responses`)).json()) as {
      responses: Array<{ payer: { id: string } }>;
    };
    expect(forms.responses.map((r) => r.payer.id).sort()).toEqual(['sandbox-payer', 'sandbox-payer-2']);
    await page.close();

    // Each payer's own request log: only its own coverage, with its own coverage-assertion id.
    const first = await packageRequests(payers.first, marks.first);
    const second = await packageRequests(payers.second, marks.second);
    expect(first.map((r) => [r.coverages, r.context])).toEqual([[['Coverage/cov-two-payers-1'], 'CRD-ASSERT-P1']]);
    expect(second.map((r) => [r.coverages, r.context])).toEqual([[['Coverage/cov-two-payers-2'], 'CRD-ASSERT-P2']]);
  });

  it('a Task in context leads to its focus order; an Encounter alone is the order', async () => {
    const withTask = await ehrLaunch('oc-p1', [{ reference: 'Task/oc-task' }]);
    const app = (await withTask.request(`${url}/app`)).body;
    expect(app).toContain('Task/oc-task');
    expect(app).not.toContain('id="order-picker"');
    const byTask = await prepare(withTask);
    expect(byTask.status, JSON.stringify(byTask.body)).toBe(200);
    expect(byTask.body.orders).toEqual(['DeviceRequest/oc-order']);
    expect(byTask.body.payers[0]!.questionnaires.map((q) => q.questionnaire)).toEqual([
      'http://example.org/dtr/Questionnaire/home-oxygen|1.0.0',
    ]);
    // A Task of another patient is refused.
    const foreignTask = await ehrLaunch('oc-p2', [{ reference: 'Task/oc-task' }]);
    const refused = await prepare(foreignTask);
    expect(refused.status).toBe(403);

    const encounter = await ehrLaunch('pat-two-payers', [{ reference: 'Encounter/enc-pat-two-payers' }]);
    const byEncounter = await prepare(encounter);
    expect(byEncounter.status, JSON.stringify(byEncounter.body)).toBe(200);
    expect(byEncounter.body.orders).toEqual(['Encounter/enc-pat-two-payers']);
    expect(byEncounter.body.payers.map((p) => p.questionnaires.length)).toEqual([1, 1]);
  });

  it('a bare payer identifier no longer matches, and registering one is refused with a clear message', async () => {
    const marks = { first: (await log(payers.first)).length, second: (await log(payers.second)).length };
    const client = await ehrLaunch('oc-p3', [{ reference: 'DeviceRequest/oc-p3-order' }]);
    const prepared = await prepare(client);
    expect(prepared.status).toBe(404);
    expect(JSON.stringify(prepared.body)).toContain('a payer this service is not registered with');
    expect(await packageRequests(payers.first, marks.first)).toEqual([]);
    expect(await packageRequests(payers.second, marks.second)).toEqual([]);

    const put = await fetch(`${url}/admin/payers/bare-payer`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        id: 'bare-payer',
        name: 'Bare',
        fhirBase: demo.payerFhirBase,
        tokenEndpoint: `${payers.first}/auth/token`,
        clientId: 'dtr-backend',
        signingAlg: 'ES384',
        scopes: ['system/Questionnaire.rs'],
        coverageIdentifiers: ['SANDBOX-PAYER'],
      }),
    });
    expect(put.status).toBe(400);
    const outcome = (await put.json()) as { issue: Array<{ diagnostics: string; expression?: string[] }> };
    expect(outcome.issue[0]!.diagnostics).toMatch(/^coverageIdentifiers\.0: each must be system\|value/);
    const listed = (await (
      await fetch(`${url}/admin/payers`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    ).json()) as Array<{ id: string }>;
    expect(listed.map((p) => p.id).sort()).toEqual(['sandbox-payer', 'sandbox-payer-2']);
  });
});
