import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { type RunningDemo, startDemo } from './support/demo.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { launchSession, prepareForm } from './support/launch.js';

const run = promisify(execFile);
const PATIENT = 'MRN-D1';
const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const SNOMED = 'http://snomed.info/sct';
const condition = (id: string, code: string, security?: Array<{ system: string; code: string }>) => ({
  resourceType: 'Condition',
  id,
  ...(security ? { meta: { security } } : {}),
  clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
  code: { coding: [{ system: SNOMED, code }] },
  subject: { reference: `Patient/${PATIENT}` },
});
/** Our own patient: its id is its MRN (ids hygiene), one qualifying condition labelled restricted + psychiatric. */
const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    {
      resourceType: 'Patient',
      id: PATIENT,
      identifier: [{ system: 'urn:example:mrn', value: 'MRN-D1' }],
      birthDate: '1948-07-01',
      name: [{ family: 'Quint', given: ['Vera'] }],
    },
    { resourceType: 'Practitioner', id: 'd-pr', name: [{ family: 'Osei', given: ['Kofi'] }] },
    sandboxCoverage('d-cov', PATIENT),
    deviceOrder('d-order', PATIENT, 'E0424'),
    condition('d-psy', '13645005', [
      { system: CONF, code: 'R' },
      { system: ACT, code: 'PSY' },
    ]),
  ].map((resource) => ({ resource })),
};

interface SubmissionView {
  id: string;
  state: string;
  route: string;
  attempts: number;
  ehrCopy?: { documentReference: string; sha256: string };
  payerOutcome?: string;
  payerAnswer?: Record<string, unknown>;
  error?: string;
}
interface Received {
  route: string;
  idempotencyKey?: string;
  body: Record<string, unknown>;
  duplicate: boolean;
}
type Json = Record<string, unknown>;

/**
 * Disclosure over real HTTP (the built server, the sandbox EHR and payer, real PostgreSQL): the review flags the
 * answer drawn from a labelled Condition, the copy is written into the EHR with the disclose identity and verified
 * before anything reaches the payer, delivery happens once per submission on each route, and every step is audited
 * without PHI. Each scenario completes a new response (one submission per response and payer).
 */
describe('disclosure: EHR copy first, then exactly one delivery', () => {
  let demo: RunningDemo;
  let dataDir: string;
  let url: string;
  let ehr: string;
  let payer: string;
  const adminToken = randomBytes(24).toString('hex');
  const keys = `k1:${randomBytes(32).toString('base64')}`;
  /** What the server and `dtr` on the command line share: the database, the key ring, the admin token. */
  let env: Record<string, string>;

  beforeAll(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), 'dtr-disclosure-'));
    const shared = { DTR_ENCRYPTION_KEYS: keys, DTR_ADMIN_TOKEN: adminToken, DTR_DATA_DIR: dataDir };
    demo = await startDemo(
      inject('adminDatabaseUrl'),
      'dtr_disclosure',
      {
        ...shared,
        DTR_PREFILL_WORKERS: '0',
        DTR_DELIVERY_MAX_ATTEMPTS: '3',
        DTR_DELIVERY_RETRY_BASE_MS: '50',
        DTR_DELIVERY_RETRY_MAX_MS: '200',
        DTR_DELIVERY_TIMEOUT_MS: '1500',
        DTR_DELIVERY_LEASE_MS: '3000',
        DTR_DELIVERY_POLL_MS: '100',
      },
      { bundle: BUNDLE },
    );
    env = { DATABASE_URL: demo.db.url, ...shared };
    ({ url, ehr, payer } = demo);
  }, 120_000);

  afterAll(async () => {
    await demo?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  afterEach(async () => {
    for (const origin of [ehr, payer]) await put(`${origin}/_sandbox/faults`, {});
    await put(`${ehr}/_sandbox/ehr-behaviour`, { alterAttachments: false });
    await setRoute('bundle');
  });

  async function put(target: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
    const res = await fetch(target, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
    expect(res.status, await res.clone().text()).toBeLessThan(300);
    return res;
  }

  async function setRoute(route: string): Promise<void> {
    const auth = { authorization: `Bearer ${adminToken}` };
    const list = (await (await fetch(`${url}/admin/payers`, { headers: auth })).json()) as Json[];
    const current = list.find((p) => p['id'] === 'sandbox-payer')!;
    if (current['submissionRoute'] === route) return;
    const { clientCertificate: _c, ...rest } = current;
    await put(`${url}/admin/payers/sandbox-payer`, { ...rest, submissionRoute: route }, auth);
  }

  /** Launch, prepare, complete the home-oxygen form, authorize disclosure: the completed form's id. */
  async function completedForm(authorize = true): Promise<{ browser: TestBrowser; formId: string }> {
    const browser = await launchSession(demo, {
      patient: PATIENT,
      user: 'd-pr',
      fhirContext: [{ reference: 'DeviceRequest/d-order' }],
    });
    const { formId } = await prepareForm(demo, browser);
    const view = JSON.parse((await browser.request(`${url}/api/session/questionnaire-responses/${formId}`)).body) as {
      response: Json & { item?: Json[] };
    };
    const response = structuredClone(view.response);
    response.item = [
      ...(response.item ?? []).filter((i) => i['linkId'] !== 'delivery-system'),
      {
        linkId: 'delivery-system',
        answer: [{ valueCoding: { system: 'http://example.org/dtr/CodeSystem/oxygen-delivery', code: 'liquid' } }],
      },
    ];
    const completed = await browser.request(`${url}/api/session/questionnaire-responses/${formId}/$complete`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(response),
    });
    expect(completed.status, completed.body).toBe(200);
    if (authorize) {
      const authorized = await browser.navigate(`${url}/disclose/authorize`, { method: 'POST' });
      expect(authorized.at(-1)!.url).toBe(`${url}/app?disclose=authorized`);
    }
    return { browser, formId };
  }

  const api = (formId: string, suffix: string) => `${url}/api/session/questionnaire-responses/${formId}/${suffix}`;

  async function send(browser: TestBrowser, formId: string, choices: Record<string, string>) {
    const res = await browser.request(api(formId, '$send'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ choices }),
    });
    return {
      status: res.status,
      body: JSON.parse(res.body) as SubmissionView & { issue?: Array<{ diagnostics: string }> },
    };
  }

  async function settled(browser: TestBrowser, id: string, states = ['delivered', 'dead']): Promise<SubmissionView> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const view = JSON.parse((await browser.request(`${url}/api/session/submissions/${id}`)).body) as SubmissionView;
      if (states.includes(view.state) || Date.now() > deadline) return view;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async function received(submissionId: string): Promise<Received[]> {
    const all = (await (await fetch(`${payer}/_sandbox/submissions`)).json()) as Received[];
    return all.filter((s) => s.idempotencyKey === submissionId);
  }

  async function copies(submissionId: string): Promise<Json[]> {
    const bundle = (await (await fetch(`${ehr}/_sandbox/store/DocumentReference`)).json()) as {
      entry?: Array<{ resource: Json }>;
    };
    return (bundle.entry ?? [])
      .map((e) => e.resource)
      .filter((r) => (r['identifier'] as Array<{ value: string }>).some((i) => i.value === submissionId));
  }

  const attachmentOf = (doc: Json) =>
    (doc['content'] as Array<{ attachment: { data: string; hash: string } }>)[0]!.attachment;

  it('flags the answer drawn from a labelled resource, withholds it, copies to the EHR first, delivers once', async () => {
    const { browser, formId } = await completedForm();
    const review = JSON.parse((await browser.request(api(formId, 'disclosure'))).body) as {
      answers: Array<{ linkId: string; reasons: string[] }>;
      needsChoice: string[];
      consents: string;
    };
    expect(review.consents).toBe('checked');
    expect(review.needsChoice).toEqual(['item:qualifying-condition']);
    expect(review.answers.find((a) => a.linkId === 'qualifying-condition')!.reasons.join(' ')).toMatch(/PSY/);
    // No choice, or a choice for something not flagged: refused, nothing written or sent.
    expect((await send(browser, formId, {})).status).toBe(400);
    expect(
      (await send(browser, formId, { 'item:birth-date': 'withhold', 'item:qualifying-condition': 'include' })).status,
    ).toBe(400);

    const sent = await send(browser, formId, { 'item:qualifying-condition': 'withhold' });
    expect(sent.status, JSON.stringify(sent.body)).toBe(202);
    const done = await settled(browser, sent.body.id);
    expect(done).toMatchObject({ state: 'delivered', route: 'bundle', payerOutcome: 'accepted' });
    // A second click: the same submission, nothing new anywhere.
    const again = await send(browser, formId, { 'item:qualifying-condition': 'include' });
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(sent.body.id);

    const atPayer = await received(sent.body.id);
    expect(atPayer).toHaveLength(1);
    const [copy] = await copies(sent.body.id);
    expect(await copies(sent.body.id)).toHaveLength(1);
    const bytes = Buffer.from(attachmentOf(copy!).data, 'base64').toString('utf8');
    // What the payer received is byte for byte the EHR's copy, and the hash says so.
    expect(JSON.stringify(atPayer[0]!.body)).toBe(bytes);
    expect(attachmentOf(copy!).hash).toBe(createHash('sha1').update(bytes).digest('base64'));
    expect(done.ehrCopy?.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    // The withheld answer is not in it; the MRN-looking patient id is not either (opaque id, references rewritten).
    expect(bytes).not.toContain('qualifying-condition');
    expect(bytes).not.toContain(`Patient/${PATIENT}`);
    expect(bytes).toContain('delivery-system');
    const qr = (atPayer[0]!.body['entry'] as Array<{ resource: Json }>)[0]!.resource as Json;
    expect(qr['resourceType']).toBe('QuestionnaireResponse');
    // The EHR keeps the clinician's full response.
    const held = (await (await fetch(`${ehr}/_sandbox/store/QuestionnaireResponse`)).json()) as {
      entry: Array<{ resource: Json }>;
    };
    expect(JSON.stringify(held.entry.map((e) => e.resource))).toContain('qualifying-condition');
    // The Provenance names the copy.
    const provenance = (await (await fetch(`${ehr}/_sandbox/store/Provenance`)).json()) as {
      entry?: Array<{ resource: Json }>;
    };
    expect(
      (provenance.entry ?? []).filter((e) =>
        (e.resource['target'] as Array<{ reference: string }>).some(
          (t) => t.reference === `DocumentReference/${copy!['id']}`,
        ),
      ),
    ).toHaveLength(1);

    // The audit trail: each step of this submission, none of the patient's data in it.
    const auditRes = await fetch(`${url}/admin/audit?submission=${sent.body.id}`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    const audit = (await auditRes.json()) as { entry: Array<{ resource: Json }> };
    const kinds = audit.entry.map((e) => (e.resource['subtype'] as Array<{ code: string }>)[0]!.code);
    expect(kinds).toEqual([
      'disclose-authorization',
      'sensitive-choice',
      'ehr-write-back',
      'ehr-read-back',
      'delivery-attempt',
      'payer-answer',
    ]);
    const text = JSON.stringify(audit);
    for (const phi of [PATIENT, 'Quint', 'Vera', '1948-07-01', 'd-psy']) expect(text).not.toContain(phi);
    const byPatient = (await (
      await fetch(`${url}/admin/audit?patient=${PATIENT}`, { headers: { authorization: `Bearer ${adminToken}` } })
    ).json()) as { entry: unknown[] };
    expect(byPatient.entry.length).toBeGreaterThanOrEqual(kinds.length);
  });

  it('sends nothing while the EHR refuses the copy; the clinician is told; a later retry sends once', async () => {
    const { browser, formId } = await completedForm();
    await put(`${ehr}/_sandbox/faults`, { errorRate: 1, errorStatus: 503, paths: ['/fhir/DocumentReference'] });
    const failed = await send(browser, formId, { 'item:qualifying-condition': 'include' });
    expect(failed.status).toBe(502);
    expect(failed.body.issue?.[0]?.diagnostics).toMatch(/nothing was sent to the payer/);
    const submissions = JSON.parse((await browser.request(`${url}/api/session/submissions`)).body) as {
      submissions: SubmissionView[];
    };
    const id = submissions.submissions.at(-1)!.id;
    expect(submissions.submissions.at(-1)!.state).toBe('write-back-failed');
    await new Promise((r) => setTimeout(r, 300));
    expect(await received(id)).toHaveLength(0);
    await put(`${ehr}/_sandbox/faults`, {});
    const retried = await send(browser, formId, {});
    expect(retried.status, JSON.stringify(retried.body)).toBe(202);
    expect(retried.body.id).toBe(id);
    expect((await settled(browser, id)).state).toBe('delivered');
    expect(await received(id)).toHaveLength(1);
    expect(await copies(id)).toHaveLength(1);
  });

  it('sends nothing when the copy the EHR holds differs from the bytes to send', async () => {
    const { browser, formId } = await completedForm();
    await put(`${ehr}/_sandbox/ehr-behaviour`, { alterAttachments: true });
    const failed = await send(browser, formId, { 'item:qualifying-condition': 'include' });
    expect(failed.status).toBe(502);
    expect(failed.body.issue?.[0]?.diagnostics).toMatch(/differs from what would be sent/);
    const id = (
      JSON.parse((await browser.request(`${url}/api/session/submissions`)).body) as { submissions: SubmissionView[] }
    ).submissions.at(-1)!.id;
    await new Promise((r) => setTimeout(r, 300));
    expect(await received(id)).toHaveLength(0);
  });

  it('dead-letters after the retries while the payer is down; `dtr submissions retry` then delivers once', async () => {
    const { browser, formId } = await completedForm();
    await put(`${payer}/_sandbox/faults`, { errorRate: 1, errorStatus: 503, paths: ['/fhir/Bundle'] });
    const sent = await send(browser, formId, { 'item:qualifying-condition': 'include' });
    expect(sent.status).toBe(202);
    const dead = await settled(browser, sent.body.id, ['dead']);
    expect(dead).toMatchObject({ state: 'dead', attempts: 3 });
    expect(await received(sent.body.id)).toHaveLength(0);
    await put(`${payer}/_sandbox/faults`, {});
    const cliEnv = { ...process.env, ...env };
    const listed = await run(process.execPath, ['bin/dtr.mjs', 'submissions', 'list', '--state', 'dead'], {
      env: cliEnv,
    });
    expect(JSON.parse(listed.stdout).map((s: { id: string }) => s.id)).toContain(sent.body.id);
    const retried = await run(process.execPath, ['bin/dtr.mjs', 'submissions', 'retry', sent.body.id], { env: cliEnv });
    expect(retried.stdout).toContain('queued again');
    expect((await settled(browser, sent.body.id, ['delivered'])).state).toBe('delivered');
    expect(await received(sent.body.id)).toHaveLength(1);
    const exported = await run(process.execPath, ['bin/dtr.mjs', 'audit', 'export', '--submission', sent.body.id], {
      env: cliEnv,
    });
    const lines = exported.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Json);
    expect(lines.map((l) => (l['subtype'] as Array<{ code: string }>)[0]!.code)).toContain('submission-retry');
    expect(exported.stdout).not.toContain(PATIENT);
  });

  it('writes the copy with a system-level disclose token when the tenant says so, with no second authorization', async () => {
    const auth = { authorization: `Bearer ${adminToken}` };
    const tenant = (await (await fetch(`${url}/admin/tenants/sandbox-ehr`, { headers: auth })).json()) as {
      registrations: Array<{
        purpose: string;
        clientId: string;
        authMethod: string;
        scopes: string[];
        redirectUri: string;
        signingAlg: string | null;
      }>;
    } & Json;
    const registration = (purpose: string) => tenant.registrations.find((r) => r.purpose === purpose)!;
    const body = (mode: string, discloseScopes: string[]) => ({
      id: 'sandbox-ehr',
      name: tenant['name'],
      fhirBase: tenant['fhirBase'],
      discloseMode: mode,
      supplement: {
        clientId: registration('supplement').clientId,
        authMethod: 'client_secret_basic',
        clientSecret: 'sandbox-only-supplement-secret',
        scopes: registration('supplement').scopes,
        redirectUri: registration('supplement').redirectUri,
      },
      disclose: {
        clientId: registration('disclose').clientId,
        authMethod: 'private_key_jwt',
        signingAlg: registration('disclose').signingAlg,
        scopes: discloseScopes,
        redirectUri: registration('disclose').redirectUri,
      },
    });
    await put(
      `${url}/admin/tenants/sandbox-ehr`,
      body('system', ['system/QuestionnaireResponse.cu', 'system/DocumentReference.c', 'system/Provenance.c']),
      auth,
    );
    try {
      const { browser, formId } = await completedForm(false);
      const sent = await send(browser, formId, { 'item:qualifying-condition': 'withhold' });
      expect(sent.status, JSON.stringify(sent.body)).toBe(202);
      expect((await settled(browser, sent.body.id)).state).toBe('delivered');
      expect(await copies(sent.body.id)).toHaveLength(1);
      const audit = (await (
        await fetch(`${url}/admin/audit?submission=${sent.body.id}`, { headers: auth })
      ).json()) as { entry: Array<{ resource: { outcomeDesc?: string; subtype: Array<{ code: string }> } }> };
      const authorization = audit.entry.find((e) => e.resource.subtype[0]!.code === 'disclose-authorization');
      expect(authorization?.resource.outcomeDesc).toBe('mode=system; singleClient=false');
    } finally {
      await put(`${url}/admin/tenants/sandbox-ehr`, body('user-delegated', registration('disclose').scopes), auth);
    }
  });

  it('delivers on the PAS route (Claim/$submit, ClaimResponse shown) and the CDex route ($submit-attachment)', async () => {
    for (const route of ['pas-claim-submit', 'cdex-submit-attachment']) {
      await setRoute(route);
      const { browser, formId } = await completedForm();
      const sent = await send(browser, formId, { 'item:qualifying-condition': 'include' });
      expect(sent.status).toBe(202);
      const done = await settled(browser, sent.body.id);
      expect(done.state, route).toBe('delivered');
      const atPayer = await received(sent.body.id);
      expect(atPayer).toHaveLength(1);
      expect(atPayer[0]!.route).toBe(route);
      const [copy] = await copies(sent.body.id);
      expect(JSON.stringify(atPayer[0]!.body)).toBe(Buffer.from(attachmentOf(copy!).data, 'base64').toString('utf8'));
      if (route === 'pas-claim-submit') {
        expect(done.payerOutcome).toMatch(/^decision: complete, approved, PA-/);
        const page = await browser.request(`${url}/app/submissions/${sent.body.id}`);
        expect(page.body).toContain('Delivered to the payer.');
        expect(page.body).toContain('approved');
      } else {
        expect(done.payerOutcome).toBe('accepted');
      }
    }
  });
});
