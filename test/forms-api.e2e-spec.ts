import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { hcpcsRules, type RunningDemo, startDemo } from './support/demo.js';
import { BIRTH_DATE_ITEM, deviceOrder, PATIENT_LAUNCH_CONTEXT, sandboxCoverage } from './support/fixtures.js';
import { launchSession, prepareForm } from './support/launch.js';

const SDC = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/';
const fhirpath = (expression: string) => ({ language: 'text/fhirpath', expression });

/** A questionnaire with one item per rule the server enforces: required, enableWhen, answerValueSet, calculated. */
const QUESTIONNAIRE = {
  resourceType: 'Questionnaire',
  id: 'forms-check',
  url: 'http://example.org/dtr/Questionnaire/forms-check',
  version: '1.0.0',
  title: 'Oxygen order check (form API test)',
  status: 'active',
  extension: [PATIENT_LAUNCH_CONTEXT],
  item: [
    BIRTH_DATE_ITEM,
    {
      linkId: 'family',
      text: 'Family name',
      type: 'string',
      maxLength: 40,
      extension: [
        {
          url: `${SDC}sdc-questionnaire-initialExpression`,
          valueExpression: fhirpath('%patient.name.first().family'),
        },
      ],
    },
    { linkId: 'smoker', text: 'Current smoker', type: 'boolean', required: true },
    {
      linkId: 'packs',
      text: 'Packs per day',
      type: 'integer',
      enableWhen: [{ question: 'smoker', operator: '=', answerBoolean: true }],
    },
    {
      linkId: 'delivery',
      text: 'Delivery system',
      type: 'choice',
      required: true,
      answerValueSet: 'http://example.org/dtr/ValueSet/forms-check-delivery',
    },
    { linkId: 'weight', text: 'Weight (kg)', type: 'decimal' },
    { linkId: 'height', text: 'Height (m)', type: 'decimal' },
    {
      linkId: 'bmi',
      text: 'Body mass index',
      type: 'decimal',
      readOnly: true,
      extension: [
        {
          url: `${SDC}sdc-questionnaire-calculatedExpression`,
          valueExpression: fhirpath(
            "(%resource.repeat(item).where(linkId='weight').answer.value / (%resource.repeat(item).where(linkId='height').answer.value * %resource.repeat(item).where(linkId='height').answer.value)).round(1)",
          ),
        },
      ],
    },
  ],
};
const DELIVERY = 'http://example.org/dtr/CodeSystem/forms-check-delivery';
const VALUE_SET = {
  resourceType: 'ValueSet',
  id: 'forms-check-delivery',
  url: 'http://example.org/dtr/ValueSet/forms-check-delivery',
  version: '1.0.0',
  status: 'active',
  compose: {
    include: [
      {
        system: DELIVERY,
        concept: [
          { code: 'concentrator', display: 'Stationary concentrator' },
          { code: 'liquid', display: 'Liquid oxygen' },
        ],
      },
    ],
  },
};
/** The same form, whose effectivePeriod ended: a launch for its order is stopped and the payer told. */
const EXPIRED = {
  ...QUESTIONNAIRE,
  id: 'forms-expired',
  url: 'http://example.org/dtr/Questionnaire/forms-expired',
  title: 'Expired form',
  effectivePeriod: { start: '2020-01-01', end: '2021-01-01' },
};

const PATIENT = 'fa-p1';
const OTHER = 'fa-p2';
const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resourceType: 'Patient', id: PATIENT, birthDate: '1950-03-04', name: [{ family: 'Mendes', given: ['Ana'] }] },
    { resourceType: 'Patient', id: OTHER, birthDate: '1961-01-02', name: [{ family: 'Other', given: ['Olu'] }] },
    { resourceType: 'Practitioner', id: 'fa-pr', name: [{ family: 'Ruiz', given: ['Dana'] }] },
    sandboxCoverage('fa-cov', PATIENT),
    sandboxCoverage('fa-cov2', OTHER),
    deviceOrder('fa-order', PATIENT, 'E0999'),
    deviceOrder('fa-order-expired', PATIENT, 'E0998'),
    deviceOrder('fa-order2', OTHER, 'E0999'),
  ].map((resource) => ({ resource })),
};

type Json = Record<string, unknown>;
interface Item {
  linkId: string;
  answer?: Array<Record<string, unknown>>;
  item?: Item[];
}
interface Qr extends Json {
  resourceType: 'QuestionnaireResponse';
  id?: string;
  status?: string;
  item?: Item[];
  meta?: { versionId?: string };
}
interface FormView {
  id: string;
  status: string;
  questionnaire: Json;
  response: Qr;
  origins: Array<{ linkId: string; origin: string; author?: { practitioner?: string } }>;
  ehr: { id?: string; versionId?: string; savedAt?: string; error?: string };
  conflict?: { theirs: Qr; ours: Qr; message: string };
  author: { known: boolean; display?: string };
  stoppedReason?: string;
  resumed?: { from: string };
}
interface Outcome {
  resourceType: 'OperationOutcome';
  issue: Array<{
    code: string;
    diagnostics?: string;
    expression?: string[];
    details?: { coding?: Array<{ code: string }> };
  }>;
}

/** The answers of a response by linkId (nested items included). */
function answers(qr: Qr | undefined): Record<string, Array<Record<string, unknown>>> {
  const out: Record<string, Array<Record<string, unknown>>> = {};
  const visit = (items: Item[] | undefined) => {
    for (const item of items ?? []) {
      if (item.answer) out[item.linkId] = item.answer;
      visit(item.item);
    }
  };
  visit(qr?.item);
  return out;
}

/** A copy of `qr` with these items' answers set (undefined removes the answer). */
function answered(qr: Qr, changes: Record<string, Array<Record<string, unknown>> | undefined>): Qr {
  const copy = structuredClone(qr);
  const items = (copy.item ??= []);
  for (const [linkId, answer] of Object.entries(changes)) {
    let item = items.find((i) => i.linkId === linkId);
    if (!item) {
      item = { linkId };
      items.push(item);
    }
    if (answer === undefined) delete item.answer;
    else item.answer = answer;
  }
  return copy;
}

const originOf = (answer: Record<string, unknown> | undefined) =>
  (answer?.['extension'] as Array<{ url: string; extension?: Array<{ url: string; valueCode?: string }> }>)
    ?.find((e) => e.url.endsWith('information-origin'))
    ?.extension?.find((e) => e.url === 'source')?.valueCode;

/**
 * The form API over real HTTP: the built server and the sandbox EHR and payer (`npm start`), a launched session, every
 * save checked by the server and stored in the EHR with the supplement identity, what the EHR holds read back from the
 * sandbox's store.
 */
describe('questionnaire responses API against the sandbox EHR', () => {
  let demo: RunningDemo;
  let url: string;
  let ehr: string;
  let payer: string;

  beforeAll(async () => {
    const files = (questionnaire: typeof QUESTIONNAIRE, code: string, description: string) => ({
      Questionnaire: questionnaire,
      ValueSet: VALUE_SET,
      rules: hcpcsRules({ description, code, questionnaire: `${questionnaire.url}|1.0.0` }),
    });
    demo = await startDemo(
      inject('adminDatabaseUrl'),
      'dtr_forms_api',
      { DTR_PREFILL_WORKERS: '0' },
      {
        bundle: BUNDLE,
        packages: { check: files(QUESTIONNAIRE, 'E0999', 'check'), expired: files(EXPIRED, 'E0998', 'expired') },
      },
    );
    ({ url, ehr, payer } = demo);
  }, 120_000);

  afterAll(() => demo?.stop());

  /** An EHR launch for the patient's order, signed in as the sandbox practitioner; the package prepared. */
  async function launch(
    patient = PATIENT,
    order = 'fa-order',
    extra: Array<Record<string, string>> = [],
  ): Promise<{ browser: TestBrowser; formId: string; prepared: Json }> {
    const browser = await launchSession(demo, {
      patient,
      user: 'fa-pr',
      fhirContext: [{ reference: `DeviceRequest/${order}` }, ...extra],
    });
    const { formId, prepared } = await prepareForm(demo, browser);
    return { browser, formId, prepared: prepared as unknown as Json };
  }

  const api = (formId: string, suffix = '') => `${url}/api/session/questionnaire-responses/${formId}${suffix}`;

  async function view(browser: TestBrowser, formId: string): Promise<FormView> {
    const seen = await browser.request(api(formId));
    expect(seen.status, seen.body).toBe(200);
    return JSON.parse(seen.body) as FormView;
  }

  async function put(browser: TestBrowser, formId: string, qr: unknown, type = 'application/fhir+json') {
    const seen = await browser.request(api(formId), {
      method: 'PUT',
      headers: { 'content-type': type },
      body: JSON.stringify(qr),
    });
    return { status: seen.status, body: JSON.parse(seen.body) as FormView & Outcome };
  }

  async function ehrResponses(): Promise<Qr[]> {
    const bundle = (await (await fetch(`${ehr}/_sandbox/store/QuestionnaireResponse`)).json()) as {
      entry?: Array<{ resource: Qr }>;
    };
    return (bundle.entry ?? []).map((e) => e.resource);
  }

  async function setFaults(settings: Json): Promise<void> {
    const res = await fetch(`${ehr}/_sandbox/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(settings),
    });
    expect(res.status).toBe(200);
  }

  it('documents the routes in OpenAPI and guards them with the session', async () => {
    const docs = (await (await fetch(`${url}/docs-json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(docs.paths['/api/session/questionnaire-responses/{id}'] ?? {}).sort()).toEqual(['get', 'put']);
    expect(Object.keys(docs.paths['/api/session/questionnaire-responses/{id}/$complete'] ?? {})).toEqual(['post']);
    expect(Object.keys(docs.paths['/api/session/questionnaire-responses'] ?? {})).toEqual(['get']);
    const anonymous = await fetch(`${url}/api/session/questionnaire-responses`);
    expect(anonymous.status).toBe(401);
  });

  it('lists the prepared form, serves it prefilled, saves drafts in the EHR and refuses what the rules forbid', async () => {
    const { browser, formId } = await launch();
    const list = await browser.request(`${url}/api/session/questionnaire-responses`);
    expect(list.status).toBe(200);
    expect(JSON.parse(list.body)).toEqual({
      responses: [
        {
          id: formId,
          questionnaire: { url: QUESTIONNAIRE.url, version: '1.0.0', title: QUESTIONNAIRE.title },
          status: 'not-started',
          payer: { id: 'sandbox-payer', name: 'Sandbox Health Plan' },
          ehr: {},
          updatedAt: expect.any(String),
        },
      ],
    });

    const opened = await view(browser, formId);
    expect(opened.questionnaire['url']).toBe(QUESTIONNAIRE.url);
    expect(answers(opened.response)['birth-date']?.[0]?.['valueDate']).toBe('1950-03-04');
    expect(opened.origins).toContainEqual(expect.objectContaining({ linkId: 'birth-date', origin: 'auto-client' }));
    expect(opened.author).toEqual({ known: true, display: 'Dana Ruiz' });
    expect(await ehrResponses()).toEqual([]);

    // A first save: one prefilled answer changed, new ones given; the server computes the BMI and the origins.
    const draft = answered(opened.response, {
      family: [{ valueString: 'Mendes-Silva' }],
      smoker: [{ valueBoolean: true }],
      packs: [{ valueInteger: 1 }],
      delivery: [{ valueCoding: { system: DELIVERY, code: 'liquid' } }],
      weight: [{ valueDecimal: 80 }],
      height: [{ valueDecimal: 2 }],
    });
    const saved = await put(browser, formId, draft);
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    expect(saved.body.status).toBe('in-progress');
    expect(saved.body.ehr).toMatchObject({ id: expect.any(String), versionId: '1' });
    const got = answers(saved.body.response);
    expect(got['bmi']?.[0]?.['valueDecimal']).toBe(20);
    expect(originOf(got['birth-date']?.[0])).toBe('auto-client');
    expect(originOf(got['family']?.[0])).toBe('override');
    expect(originOf(got['smoker']?.[0])).toBe('manual');
    expect(saved.body.origins).toContainEqual(
      expect.objectContaining({
        linkId: 'family',
        origin: 'override',
        author: expect.objectContaining({ practitioner: 'Practitioner/fa-pr' }),
      }),
    );
    let held = await ehrResponses();
    expect(held).toHaveLength(1);
    expect(held[0]).toMatchObject({
      id: saved.body.ehr.id,
      status: 'in-progress',
      subject: { reference: `Patient/${PATIENT}` },
      questionnaire: `${QUESTIONNAIRE.url}|1.0.0`,
      meta: { versionId: '1' },
    });
    expect(answers(held[0])['family']?.[0]?.['valueString']).toBe('Mendes-Silva');

    // Preparing again in the same session keeps the form and its draft.
    const again = await browser.request(`${url}/api/session/questionnaires`, { method: 'POST' });
    expect(again.status).toBe(200);
    const reopened = JSON.parse(again.body) as {
      payers: Array<{ questionnaires: Array<{ formId: string; formStatus: string }> }>;
    };
    expect(reopened.payers[0]!.questionnaires[0]).toMatchObject({ formId, formStatus: 'in-progress' });
    expect(answers((await view(browser, formId)).response)['family']?.[0]?.['valueString']).toBe('Mendes-Silva');

    // Each refusal: 422 naming the item, nothing stored here or in the EHR.
    const refusals: Array<[string, Qr, string, string]> = [
      ['wrong type', answered(saved.body.response, { smoker: [{ valueString: 'yes' }] }), 'smoker', 'wrong-type'],
      [
        'value outside its answerValueSet',
        answered(saved.body.response, { delivery: [{ valueCoding: { system: DELIVERY, code: 'jetpack' } }] }),
        'delivery',
        'not-in-answer-set',
      ],
      [
        'calculated item changed',
        answered(saved.body.response, { bmi: [{ valueDecimal: 99 }] }),
        'bmi',
        'calculated-changed|read-only-changed',
      ],
      ['unknown linkId', answered(saved.body.response, { nope: [{ valueString: 'x' }] }), 'nope', 'unknown-item'],
    ];
    for (const [what, qr, linkId, code] of refusals) {
      const refused = await put(browser, formId, qr, 'application/json');
      expect(refused.status, what).toBe(422);
      const issue = refused.body.issue.find((i) => i.expression?.includes(linkId));
      expect(issue, `${what}: ${JSON.stringify(refused.body)}`).toBeDefined();
      expect(issue!.details?.coding?.[0]?.code, what).toMatch(new RegExp(`^(${code})$`));
      expect(issue!.diagnostics, what).toEqual(expect.any(String));
    }
    expect(answers((await view(browser, formId)).response)).toEqual(got);
    expect(await ehrResponses()).toEqual(held);

    // An answer to a disabled item is dropped, never stored.
    const disabled = await put(
      browser,
      formId,
      answered(saved.body.response, { smoker: [{ valueBoolean: false }], packs: [{ valueInteger: 3 }] }),
    );
    expect(disabled.status, JSON.stringify(disabled.body)).toBe(200);
    expect(answers(disabled.body.response)['packs']).toBeUndefined();
    held = await ehrResponses();
    expect(held[0]!.meta?.versionId).toBe('2');
    expect(answers(held[0])['packs']).toBeUndefined();
    expect(answers(held[0])['smoker']?.[0]?.['valueBoolean']).toBe(false);

    // A response for another patient: 403, nothing changes.
    const foreign = await put(browser, formId, {
      ...disabled.body.response,
      subject: { reference: `Patient/${OTHER}` },
    });
    expect(foreign.status).toBe(403);
    expect((await ehrResponses())[0]!.meta?.versionId).toBe('2');

    // $complete refuses while a required enabled item is empty.
    const incomplete = await browser.request(api(formId, '/$complete'), {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(answered(disabled.body.response, { delivery: undefined })),
    });
    expect(incomplete.status).toBe(422);
    expect((JSON.parse(incomplete.body) as Outcome).issue).toContainEqual(
      expect.objectContaining({ expression: ['delivery'] }),
    );
    expect((await ehrResponses())[0]!.status).toBe('in-progress');

    // Another session's form is not found in this one.
    const stranger = await launch(OTHER, 'fa-order2');
    expect((await stranger.browser.request(api(formId))).status).toBe(404);
  }, 120_000);

  it('keeps the draft when the EHR fails, shows both versions on a 412, and completes', async () => {
    const { browser, formId } = await launch();
    const opened = await view(browser, formId);
    // The form above left an in-progress response for this order: this launch resumes it.
    expect(opened.status).toBe('in-progress');
    expect(opened.resumed?.from).toBe(`QuestionnaireResponse/${opened.ehr.id}`);
    expect(answers(opened.response)['family']?.[0]?.['valueString']).toBe('Mendes-Silva');
    expect(originOf(answers(opened.response)['family']?.[0])).toBe('override');
    const before = await ehrResponses();

    // EHR unavailable: 503, the draft is kept here and says so; the EHR is unchanged.
    await setFaults({ errorStatus: 503, failNext: 10, paths: ['/fhir/QuestionnaireResponse'] });
    try {
      const failed = await put(browser, formId, answered(opened.response, { weight: [{ valueDecimal: 100 }] }));
      expect(failed.status).toBe(503);
      expect(failed.body.resourceType).toBe('OperationOutcome');
      expect(failed.body.issue[0]!.diagnostics).toMatch(/saved here but not yet in the EHR/);
    } finally {
      await setFaults({});
    }
    const kept = await view(browser, formId);
    expect(answers(kept.response)['weight']?.[0]?.['valueDecimal']).toBe(100);
    expect(answers(kept.response)['bmi']?.[0]?.['valueDecimal']).toBe(25);
    expect(kept.ehr.error).toMatch(/not yet in the EHR/);
    expect(await ehrResponses()).toEqual(before);

    // Someone else changes the response in the EHR: our next save gets 412 → 409 with both versions.
    const theirs = structuredClone(before[0]!);
    theirs.item = answered(theirs, { family: [{ valueString: 'Changed-Elsewhere' }] }).item;
    const touched = await fetch(`${ehr}/_sandbox/store/QuestionnaireResponse/${theirs.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(theirs),
    });
    expect(touched.status).toBe(200);
    const conflict = await put(browser, formId, kept.response);
    expect(conflict.status).toBe(409);
    expect(conflict.body.conflict?.message).toMatch(/someone else changed/i);
    expect(answers(conflict.body.conflict?.theirs)['family']?.[0]?.['valueString']).toBe('Changed-Elsewhere');
    expect(answers(conflict.body.conflict?.ours)['family']?.[0]?.['valueString']).toBe('Mendes-Silva');
    expect(answers((await ehrResponses())[0])['family']?.[0]?.['valueString']).toBe('Changed-Elsewhere');

    // Complete (having seen both): stored in the EHR as completed, origins and author as the profile asks.
    const completed = await browser.request(api(formId, '/$complete'), {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(
        answered(kept.response, { delivery: [{ valueCoding: { system: DELIVERY, code: 'concentrator' } }] }),
      ),
    });
    expect(completed.status, completed.body).toBe(200);
    const done = JSON.parse(completed.body) as FormView;
    expect(done.status).toBe('completed');
    expect(done.conflict).toBeUndefined();
    const [stored] = await ehrResponses();
    expect(stored).toMatchObject({ id: opened.ehr.id, status: 'completed' });
    const final = answers(stored);
    expect(originOf(final['birth-date']?.[0])).toBe('auto-client');
    expect(originOf(final['family']?.[0])).toBe('override');
    expect(originOf(final['delivery']?.[0])).toBe('manual');
    expect(JSON.stringify(stored)).toContain('Practitioner/fa-pr');
    // A completed response is no longer changed here.
    expect((await put(browser, formId, done.response)).status).toBe(409);

    // A launch that names the response (fhirContext) opens it as it is in the EHR.
    const named = await launch(PATIENT, 'fa-order', [{ reference: `QuestionnaireResponse/${opened.ehr.id}` }]);
    const relaunched = await view(named.browser, named.formId);
    expect(relaunched).toMatchObject({ status: 'completed', ehr: { id: opened.ehr.id } });
    expect(answers(relaunched.response)['delivery']?.[0]?.['valueCoding']).toMatchObject({ code: 'concentrator' });
  }, 120_000);

  it('stops a questionnaire whose effectivePeriod ended, tells the clinician why and reports it to the payer', async () => {
    await fetch(`${payer}/_sandbox/requests`, { method: 'DELETE' });
    const { browser, formId } = await launch(PATIENT, 'fa-order-expired');
    const stopped = await view(browser, formId);
    expect(stopped.status).toBe('stopped');
    expect(stopped.stoppedReason).toEqual(expect.any(String));
    const log = (await (await fetch(`${payer}/_sandbox/requests`)).json()) as Array<{ path: string }>;
    expect(log.some((e) => e.path.endsWith('$log-questionnaire-errors'))).toBe(true);
    expect((await put(browser, formId, stopped.response)).status).toBe(409);
  }, 120_000);
});
