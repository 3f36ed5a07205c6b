import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from './support/browser.js';
import { launchBrowser } from './support/chromium.js';
import { packagesPerOrder, type RunningDemo, startDemo } from './support/demo.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { launchSession, openFormFromEhrPage, prepareForm } from './support/launch.js';

/**
 * A payer's form rules are hostile input at every save too: the calculatedExpression and enableWhenExpression of its
 * questionnaire are recomputed by the server on each save, and a regular expression that backtracks for ever on what
 * the clinician typed must stop that save at the deadline (504), not the server. The built server with two workers,
 * the sandbox EHR and payer, over real HTTP.
 */
const DEADLINE_MS = 3000;
const SDC = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/';
/** The payer's check of the clinician's note: `(a+)+$` backtracks for ever on a run of a's that does not end there. */
const MATCHES_NOTE = "%resource.item.where(linkId = 'note').answer.value.matches('^(a+)+$')";
const HOSTILE_NOTE = `${'a'.repeat(40)}!`;
const PATIENT = 'fr-p1';

const questionnaire = (id: string, title: string, ruled: Record<string, unknown>) => ({
  resourceType: 'Questionnaire',
  id,
  url: `http://example.org/dtr/Questionnaire/${id}`,
  version: '1.0.0',
  title,
  status: 'active',
  item: [{ linkId: 'note', text: 'Note for the payer', type: 'string' }, ruled],
});
const CALCULATED = questionnaire('rules-calculated', 'Note check (calculated)', {
  linkId: 'note-ok',
  text: 'The note is in the expected form',
  type: 'boolean',
  readOnly: true,
  extension: [
    {
      url: `${SDC}sdc-questionnaire-calculatedExpression`,
      valueExpression: { language: 'text/fhirpath', expression: MATCHES_NOTE },
    },
  ],
});
const ENABLE_WHEN = questionnaire('rules-enable-when', 'Note check (enableWhen)', {
  linkId: 'detail',
  text: 'Details',
  type: 'string',
  extension: [
    {
      url: `${SDC}sdc-questionnaire-enableWhenExpression`,
      valueExpression: { language: 'text/fhirpath', expression: MATCHES_NOTE },
    },
  ],
});
const ORDERS = {
  calculated: ['fr-calc', 'E0911', CALCULATED],
  enableWhen: ['fr-enable', 'E0912', ENABLE_WHEN],
} as const;

const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resourceType: 'Patient', id: PATIENT, birthDate: '1949-02-03', name: [{ family: 'Lind', given: ['Ebba'] }] },
    { resourceType: 'Practitioner', id: 'fr-pr', name: [{ family: 'Ruiz', given: ['Dana'] }] },
    sandboxCoverage('fr-cov', PATIENT),
    ...Object.values(ORDERS).map(([id, code]) => deviceOrder(id, PATIENT, code)),
  ].map((resource) => ({ resource })),
};

interface Item {
  linkId: string;
  answer?: Array<Record<string, unknown>>;
}
interface Qr {
  resourceType: 'QuestionnaireResponse';
  id?: string;
  item?: Item[];
  meta?: { versionId?: string };
}
interface FormView {
  status: string;
  response: Qr;
  ehr: { id?: string; versionId?: string };
}
interface Outcome {
  resourceType: string;
  issue: Array<{ code: string; diagnostics?: string }>;
}

const answerOf = (qr: Qr | undefined, linkId: string) => qr?.item?.find((i) => i.linkId === linkId)?.answer;
const withNote = (note: string, extra: Item[] = []): Qr => ({
  resourceType: 'QuestionnaireResponse',
  item: [{ linkId: 'note', answer: [{ valueString: note }] }, ...extra],
});

describe("bounds on a payer's form rules at each save, through the server", () => {
  let demo: RunningDemo;
  let url: string;
  let ehr: string;

  beforeAll(async () => {
    const packages = packagesPerOrder(ORDERS);
    demo = await startDemo(
      inject('adminDatabaseUrl'),
      'dtr_form_rules',
      { DTR_PREFILL_WORKERS: '2', DTR_PREFILL_DEADLINE_MS: String(DEADLINE_MS) },
      { bundle: BUNDLE, packages },
    );
    ({ url, ehr } = demo);
  }, 120_000);

  afterAll(async () => {
    await chromium?.close();
    await demo?.stop();
  });

  let chromium: Browser | undefined;

  /** A signed-in session for one of the orders, its package prepared: the browser and the form's API URL. */
  async function open(order: keyof typeof ORDERS): Promise<{ browser: TestBrowser; form: string }> {
    const browser = await launchSession(demo, {
      patient: PATIENT,
      user: 'fr-pr',
      fhirContext: [{ reference: `DeviceRequest/${ORDERS[order][0]}` }],
    });
    const { formId } = await prepareForm(demo, browser);
    return { browser, form: `${url}/api/session/questionnaire-responses/${formId}` };
  }

  const send = (browser: TestBrowser, target: string, method: 'PUT' | 'POST', qr: Qr) =>
    browser.request(target, {
      method,
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(qr),
    });

  async function view(browser: TestBrowser, form: string): Promise<FormView> {
    const seen = await browser.request(form);
    expect(seen.status, seen.body).toBe(200);
    return JSON.parse(seen.body) as FormView;
  }

  /** What the sandbox EHR holds of the form's response. */
  async function inEhr(id: string): Promise<Qr> {
    const res = await fetch(`${ehr}/_sandbox/store/QuestionnaireResponse`);
    const bundle = (await res.json()) as { entry?: Array<{ resource: Qr }> };
    return bundle.entry!.map((e) => e.resource).find((r) => r.id === id)!;
  }

  /** A save stopped at the deadline: 504, an OperationOutcome naming the questionnaire's rules, nothing applied. */
  function expectStopped(seen: { status: number; body: string }, title: string): void {
    expect(seen.status, seen.body).toBe(504);
    const outcome = JSON.parse(seen.body) as Outcome;
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue[0]).toMatchObject({
      code: 'timeout',
      diagnostics: expect.stringContaining(
        `the payer's rules of the questionnaire "${title}" (its calculatedExpression, enableWhenExpression and variable expressions) did not finish within their deadline of ${DEADLINE_MS} ms; this save was not applied: nothing was stored here or in the EHR, and the draft saved before stands`,
      ),
    });
  }

  it('stops a save whose calculatedExpression backtracks at the deadline; the server answers meanwhile; the draft stands', async () => {
    const [hostile, other] = await Promise.all([open('calculated'), open('calculated')]);
    const first = await send(hostile.browser, hostile.form, 'PUT', withNote('aaa'));
    expect(first.status, first.body).toBe(200);
    const saved = JSON.parse(first.body) as FormView;
    expect(answerOf(saved.response, 'note-ok')).toMatchObject([{ valueBoolean: true }]);

    let settled = false;
    const stopping = send(hostile.browser, hostile.form, 'PUT', withNote(HOSTILE_NOTE)).finally(() => {
      settled = true;
    });
    // While the payer's expression runs, another clinician's save and the health check are answered.
    const meanwhile = await send(other.browser, other.form, 'PUT', withNote('b'));
    expect(meanwhile.status, meanwhile.body).toBe(200);
    expect(answerOf((JSON.parse(meanwhile.body) as FormView).response, 'note-ok')).toMatchObject([
      { valueBoolean: false },
    ]);
    expect((await fetch(`${url}/health/live`)).status).toBe(200);
    expect(settled).toBe(false);
    expectStopped(await stopping, 'Note check (calculated)');

    // Nothing was applied: the draft here and the copy in the EHR are the first save's.
    const after = await view(hostile.browser, hostile.form);
    expect(after.ehr).toEqual(saved.ehr);
    expect(answerOf(after.response, 'note')).toMatchObject([{ valueString: 'aaa' }]);
    const stored = await inEhr(saved.ehr.id!);
    expect(stored.meta?.versionId).toBe(saved.ehr.versionId);
    expect(answerOf(stored, 'note')).toMatchObject([{ valueString: 'aaa' }]);

    // A normal save afterwards goes through (a fresh worker replaced the stopped one).
    const next = await send(hostile.browser, hostile.form, 'PUT', withNote('aaaa'));
    expect(next.status, next.body).toBe(200);
    const updated = JSON.parse(next.body) as FormView;
    expect(answerOf(updated.response, 'note')).toMatchObject([{ valueString: 'aaaa' }]);
    expect(answerOf(updated.response, 'note-ok')).toMatchObject([{ valueBoolean: true }]);
    expect(updated.ehr.versionId).not.toBe(saved.ehr.versionId);
  });

  it('stops a save and a completion whose enableWhenExpression backtracks; a normal save afterwards works', async () => {
    const { browser, form } = await open('enableWhen');
    let settled = false;
    const stopping = send(browser, form, 'PUT', withNote(HOSTILE_NOTE, [{ linkId: 'detail' }])).finally(() => {
      settled = true;
    });
    expect((await fetch(`${url}/health/live`)).status).toBe(200);
    expect(settled).toBe(false);
    expectStopped(await stopping, 'Note check (enableWhen)');
    expectStopped(await send(browser, `${form}/$complete`, 'POST', withNote(HOSTILE_NOTE)), 'Note check (enableWhen)');
    // Nothing was stored: the form has no draft and the EHR no response.
    const untouched = await view(browser, form);
    expect(untouched.status).toBe('not-started');
    expect(untouched.ehr).toEqual({});

    // The item is enabled when the note matches, and removed (with its answer) when it does not.
    const detail = { linkId: 'detail', answer: [{ valueString: 'wheelchair' }] };
    const enabled = await send(browser, form, 'PUT', withNote('aa', [detail]));
    expect(enabled.status, enabled.body).toBe(200);
    expect(answerOf((JSON.parse(enabled.body) as FormView).response, 'detail')).toMatchObject([
      { valueString: 'wheelchair' },
    ]);
    const disabled = await send(browser, form, 'PUT', withNote('ab', [detail]));
    expect(disabled.status, disabled.body).toBe(200);
    const view2 = JSON.parse(disabled.body) as FormView;
    expect(answerOf(view2.response, 'detail')).toBeUndefined();
    expect(answerOf(await inEhr(view2.ehr.id!), 'note')).toMatchObject([{ valueString: 'ab' }]);
  });

  it("in a real browser: the page does not run the risky rule (typing stays live), the save gets 504 with the answers kept, and a normal save shows the server's value", async () => {
    chromium = await launchBrowser();
    const tab = await chromium.newPage();
    await openFormFromEhrPage(tab, demo.demoUrl, {
      patient: PATIENT,
      questionnaire: 'rules-calculated',
      order: 'DeviceRequest/fr-calc',
    });
    // The page says which rule it leaves to the server, and why, on the item and in the list.
    expect(await tab.locator('#server-rules-section').isVisible()).toBe(true);
    expect(await tab.locator('#server-rules li[data-link-id="note-ok"]').textContent()).toBe(
      'The note is in the expected form: calculatedExpression, because its regular expression /^(a+)+$/ may backtrack without end: a repeated part repeats inside itself (nested quantifiers)',
    );
    expect(await tab.locator('p.server-rule').textContent()).toBe(
      "The payer's calculatedExpression for this item is run by the server when you save, not on this page.",
    );
    const formUrl = new URL(`/api/session/questionnaire-responses/${tab.url().split('/').pop()}`, tab.url()).href;
    const before = (await (await tab.request.get(formUrl)).json()) as FormView;
    // Typing the note that makes the pattern backtrack: the renderer would evaluate it on each change and freeze the
    // tab; the page does not, so the typing completes and the page answers.
    const note = tab.locator('[id="note/1"]');
    await note.fill(HOSTILE_NOTE);
    await note.press('Tab');
    expect(await tab.evaluate("document.getElementById('save').textContent")).toBe('Save draft');

    await tab.locator('#save').click();
    await expect
      .poll(() => tab.locator('#messages').textContent(), { timeout: 30_000 })
      .toContain('Not saved (504): your answers are still on this page; save again later.');
    expect(await tab.locator('#messages li').textContent()).toContain(
      `the payer's rules of the questionnaire "Note check (calculated)"`,
    );
    expect(await note.inputValue()).toBe(HOSTILE_NOTE);
    // Nothing was stored, here or in the EHR (the form may resume what an earlier test saved for this order).
    const stopped = (await (await tab.request.get(formUrl)).json()) as FormView;
    expect(stopped.ehr).toEqual(before.ehr);
    expect(answerOf(stopped.response, 'note')).toEqual(answerOf(before.response, 'note'));
    if (before.ehr.id) expect((await inEhr(before.ehr.id)).meta?.versionId).toBe(before.ehr.versionId);

    // A note that matches: saved, and the server's calculated value is on the page.
    await note.fill('aaa');
    await note.press('Tab');
    await tab.locator('#save').click();
    await expect.poll(() => tab.locator('#messages').textContent(), { timeout: 30_000 }).toBe('Draft saved.');
    const saved = (await (await tab.request.get(formUrl)).json()) as FormView;
    expect(answerOf(saved.response, 'note-ok')).toMatchObject([{ valueBoolean: true }]);
    expect(saved.ehr.versionId).toBeDefined();
    expect(saved.ehr.versionId).not.toBe(before.ehr.versionId);
    // The page shows it: the form rendered from the server's answer holds the value.
    const shown = (await tab.evaluate(
      "LForms.Util.getFormFHIRData('QuestionnaireResponse', 'R4', document.getElementById('form-container'))",
    )) as Qr;
    expect(answerOf(shown, 'note-ok')).toMatchObject([{ valueBoolean: true }]);
  }, 120_000);
});
