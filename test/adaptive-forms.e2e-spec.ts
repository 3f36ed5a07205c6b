import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { launchBrowser } from './support/chromium.js';
import { putPayerWithCli, type RunningDemo, startDemo } from './support/demo.js';
import { openFormFromEhrPage } from './support/launch.js';
import { repoRoot } from './support/processes.js';

type Ext = { url: string; valueCode?: string; extension?: Ext[]; valueReference?: { reference?: string } };
type Answer = Record<string, unknown> & { extension?: Ext[] };
type Item = { linkId: string; answer?: Answer[]; item?: Item[] };
type StoredQr = {
  id: string;
  status: string;
  questionnaire?: string;
  contained?: Array<{ resourceType: string; id?: string; url?: string; item?: Item[] }>;
  extension?: Ext[];
  subject?: { reference?: string };
  item?: Item[];
};

const ADMIN = `adaptive-admin-${Date.now()}-token-0123456789`;
const COVERAGE_INFORMATION = 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information';
const sourceOf = (answer: Answer | undefined) =>
  answer?.extension?.find((e) => e.url.endsWith('information-origin'))?.extension?.find((e) => e.url === 'source')
    ?.valueCode;
const answerOf = (qr: { item?: Item[] }, linkId: string) => qr.item?.find((i) => i.linkId === linkId)?.answer?.[0];

/** The sandbox payer registration, put again with the CLI as an operator would (igVersion, or another base). */
function registerPayer(demo: RunningDemo, igVersion: string, fhirBase = demo.payerFhirBase): void {
  putPayerWithCli(demo.db.url, {
    id: 'sandbox-payer',
    name: 'Sandbox Health Plan',
    fhirBase,
    tokenEndpoint: `${new URL(demo.payerFhirBase).origin}/auth/token`,
    clientId: 'dtr-backend',
    signingAlg: 'ES384',
    scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs', 'system/QuestionnaireResponse.c'],
    igVersion,
    coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER'],
  });
}

/**
 * Adaptive questionnaires through the form page in a real browser, against the sandbox payer speaking each DTR
 * version (its input and answer shapes enforced by the sandbox: a wrong shape is a 400): the payer asks one question
 * at a time; a question the EHR can answer arrives prefilled and marked so; the payer says when the questionnaire is
 * complete and gives its coverage determination; the EHR holds the completed response with its contained
 * Questionnaire. Then the failure paths through the API: payer unreachable, refusing, failing; nothing entered lost.
 */
describe('adaptive questionnaires in the form page', () => {
  let demo: RunningDemo;
  let browser: Browser;
  let payerOrigin: string;

  beforeAll(async () => {
    demo = await startDemo(inject('adminDatabaseUrl'), 'dtr_adaptive', {
      DTR_ADMIN_TOKEN: ADMIN,
      SANDBOX_PACKAGE_DIRS: path.join(repoRoot, 'apps/sandbox/fixtures/packages/adaptive-example'),
      SANDBOX_BUNDLES: path.join(repoRoot, 'apps/sandbox/fixtures/patients/adaptive-sleep-patients.json'),
    });
    payerOrigin = new URL(demo.payerFhirBase).origin;
    browser = await launchBrowser();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
  });

  /** A sandbox control request; once more when a kept-alive connection was closed under it (not a product error). */
  async function control(url: string, init?: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch {
      return fetch(url, init);
    }
  }
  async function payerSpeaks(version: string): Promise<void> {
    const res = await control(`${payerOrigin}/_sandbox/dtr-version`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ version }),
    });
    expect(res.status).toBe(200);
  }
  async function payerFaults(settings: Record<string, unknown>): Promise<void> {
    const res = await control(`${payerOrigin}/_sandbox/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(settings),
    });
    expect(res.ok).toBe(true);
  }
  const nextQuestionCalls = async () => {
    const log = (await (await control(`${payerOrigin}/_sandbox/requests`)).json()) as Array<{
      path: string;
      status?: number;
    }>;
    return log.filter((e) => e.path.endsWith('/Questionnaire/$next-question'));
  };
  const ehrResponses = async () => {
    const store = (await (
      await control(new URL('/_sandbox/store/QuestionnaireResponse', demo.demoUrl).href)
    ).json()) as {
      entry?: Array<{ resource: StoredQr }>;
    };
    return (store.entry ?? []).map((e) => e.resource);
  };
  const item = (page: Page, linkId: string) => page.locator(`[id^="item-${linkId}/"]`);
  const asked = (page: Page, linkId: string) => expect.poll(() => item(page, linkId).count(), { timeout: 20_000 });

  /** Launches for the patient's sleep therapy order and opens the adaptive form (which asks for its first question). */
  async function openAdaptiveForm(page: Page, patient: string): Promise<string> {
    await openFormFromEhrPage(page, demo.demoUrl, { patient, questionnaire: 'sleep' });
    await asked(page, 'sleep-study-done').toBe(1);
    return new URL(page.url()).pathname.split('/').at(-1)!;
  }
  const next = async (page: Page, expected: string) => {
    await page.locator('#next').click();
    await expect.poll(() => page.locator('#messages').textContent(), { timeout: 20_000 }).toContain(expected);
  };

  for (const [version, patient, birthDate] of [
    ['2.2', 'adapt-ana', '1961-03-14'],
    ['2.1', 'adapt-ben', '1957-11-02'],
    ['2.0.1', 'adapt-cy', '1970-06-30'],
  ] as const) {
    it(`DTR ${version}: walks the adaptive questionnaire to completed, a new question prefilled from the EHR`, async () => {
      await payerSpeaks(version);
      registerPayer(demo, version);
      const before = (await nextQuestionCalls()).length;
      const started = new Date().toISOString();
      let context = await browser.newContext();
      let page = await context.newPage();
      const formId = await openAdaptiveForm(page, patient);
      // The payer decides completion: no Complete button, a next-questions one instead.
      expect(await page.locator('#complete').isHidden()).toBe(true);
      expect(await item(page, 'patient-birth-date').count()).toBe(0);

      await page.locator('[id="sleep-study-done/1|true"]').click();
      await next(page, 'asked 1 more question');
      // The new question arrives answered from the EHR (the launch patient's birth date), marked as prefilled.
      await asked(page, 'patient-birth-date').toBe(1);
      // (2.2 tells the client's prefill, auto-client, from the payer's; earlier versions have one code, auto.)
      const prefilled = version === '2.2' ? 'auto-client' : 'auto';
      expect(await item(page, 'patient-birth-date').locator('.origin-badge').textContent()).toBe(prefilled);
      expect(await page.locator('#origins tr[data-link-id="patient-birth-date"] .origin').textContent()).toBe(
        prefilled,
      );
      const view = (await (
        await page.request.get(new URL(`/api/session/questionnaire-responses/${formId}`, page.url()).href)
      ).json()) as {
        response: { item?: Item[] };
      };
      expect(answerOf(view.response, 'patient-birth-date')?.['valueDate']).toBe(birthDate);
      // The answer already given stays as the clinician gave it.
      expect(answerOf(view.response, 'sleep-study-done')?.['valueBoolean']).toBe(true);

      if (version === '2.2') {
        // Relaunched from the EHR in a new browser session: the draft the EHR holds (its contained Questionnaire
        // with the questions asked so far) is resumed with every answer and origin; the payer is not asked again.
        await context.close();
        context = await browser.newContext();
        page = await context.newPage();
        const calls = (await nextQuestionCalls()).length;
        await openAdaptiveForm(page, patient);
        await expect.poll(() => page.locator('#messages').textContent()).toContain('Resumed');
        await asked(page, 'patient-birth-date').toBe(1);
        expect(await item(page, 'patient-birth-date').locator('.origin-badge').textContent()).toBe(prefilled);
        expect(await item(page, 'sleep-study-done').locator('.origin-badge').textContent()).toBe('manual');
        expect((await nextQuestionCalls()).length).toBe(calls);
      }

      await next(page, 'asked 1 more question');
      await asked(page, 'ahi').toBe(1);
      await page.locator('[id="ahi/1"]').fill('22.5');
      await page.locator('[id="ahi/1"]').press('Tab');
      await next(page, 'asked 1 more question');
      await asked(page, 'face-to-face-date').toBe(1);
      const date = page.locator('[id="face-to-face-date/1"]').locator('input');
      await date.click();
      await date.fill('11/20/2026');
      await date.press('Enter');
      await next(page, 'the questionnaire is complete');
      expect(await page.locator('#form-status').textContent()).toContain('Status: completed');
      expect(await page.locator('#next').isDisabled()).toBe(true);
      // The payer's coverage determination is shown to the clinician.
      expect(await page.locator('#coverage-information').isHidden()).toBe(false);
      expect(await page.locator('#determinations dd[data-name="covered"]').textContent()).toBe('covered');
      expect(await page.locator('#determinations dd[data-name="coverage"]').textContent()).toBe(
        `Coverage/${patient}-cov`,
      );
      await context.close();

      // The payer was asked once per step in this version's shapes (the sandbox refuses any other with 400).
      const calls = (await nextQuestionCalls()).slice(before);
      expect(calls.map((c) => c.status)).toEqual([200, 200, 200, 200, 200]);
      // The EHR holds the completed response with its contained Questionnaire and the payer's determination.
      const held = (await ehrResponses()).filter((qr) => qr.subject?.reference === `Patient/${patient}`);
      expect(held).toHaveLength(1);
      const qr = held[0]!;
      expect(qr.status).toBe('completed');
      const contained = qr.contained?.find((r) => r.resourceType === 'Questionnaire');
      expect(qr.questionnaire).toBe(`#${contained?.id}`);
      expect(contained?.url).toBe('http://example.org/dtr/Questionnaire/sleep-therapy-adaptive');
      expect(contained?.item?.map((i) => i.linkId)).toEqual([
        'sleep-study-done',
        'patient-birth-date',
        'ahi',
        'face-to-face-date',
      ]);
      expect(answerOf(qr, 'patient-birth-date')?.['valueDate']).toBe(birthDate);
      expect(sourceOf(answerOf(qr, 'patient-birth-date'))).toBe(prefilled);
      expect(sourceOf(answerOf(qr, 'sleep-study-done'))).toBe('manual');
      expect(answerOf(qr, 'ahi')?.['valueDecimal']).toBe(22.5);
      expect(answerOf(qr, 'face-to-face-date')?.['valueDate']).toBe('2026-11-20');
      expect(qr.extension?.some((e) => e.url === COVERAGE_INFORMATION)).toBe(true);

      // What each step's incremental prefill read from the EHR is audited as the first prefill is, naming the step.
      const audit = (await (
        await fetch(`${demo.url}/admin/audit?from=${encodeURIComponent(started)}&_count=1000`, {
          headers: { authorization: `Bearer ${ADMIN}` },
        })
      ).json()) as { entry?: Array<{ resource: { subtype?: Array<{ code: string }>; outcomeDesc?: string } }> };
      const access = (audit.entry ?? []).filter((e) => e.resource.subtype?.some((c) => c.code === 'ehr-data-access'));
      const steps = access
        .map((e) => (e.resource.outcomeDesc ?? '').split('; '))
        .filter((d) => d.includes('step=next-question'));
      expect(steps.length).toBeGreaterThan(0);
      expect(
        steps.every((d) => d.some((p) => p.startsWith('reads=')) && d.some((p) => p.startsWith('readHashes='))),
      ).toBe(true);
    }, 180_000);
  }

  it('payer unreachable, refusing or failing: the API and the page say so, and nothing entered is lost', async () => {
    await payerSpeaks('2.2');
    registerPayer(demo, '2.2');
    const context = await browser.newContext();
    const page = await context.newPage();
    const formId = await openAdaptiveForm(page, 'adapt-ana');
    const api = new URL(`/api/session/questionnaire-responses/${formId}`, page.url()).href;
    const answered = {
      resourceType: 'QuestionnaireResponse',
      status: 'in-progress',
      item: [{ linkId: 'sleep-study-done', answer: [{ valueBoolean: false }] }],
    };
    const keptAnswer = async () => {
      const view = (await (await page.request.get(api)).json()) as { status: string; response: { item?: Item[] } };
      return { status: view.status, answer: answerOf(view.response, 'sleep-study-done')?.['valueBoolean'] };
    };

    // A question left unanswered: refused here (422), the payer is not asked.
    const calls = (await nextQuestionCalls()).length;
    const unanswered = await page.request.post(`${api}/$next-question`, {
      data: { resourceType: 'QuestionnaireResponse', status: 'in-progress', item: [] },
    });
    expect(unanswered.status()).toBe(422);
    expect(JSON.stringify(await unanswered.json())).toContain('sleep-study-done');
    expect((await nextQuestionCalls()).length).toBe(calls);

    // Unreachable: the registration now names a base where nothing listens.
    registerPayer(demo, '2.2', 'http://127.0.0.1:9/fhir');
    const unreachable = await page.request.post(`${api}/$next-question`, { data: answered });
    expect(unreachable.status()).toBe(502);
    const outcome = (await unreachable.json()) as { resourceType: string; issue: Array<{ diagnostics: string }> };
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue[0]!.diagnostics).toContain('Your answers are kept here');
    expect(await keptAnswer()).toEqual({ status: 'in-progress', answer: false });
    registerPayer(demo, '2.2');

    // Refusing (4xx): the payer speaks 2.1 while registered as 2.2, so it refuses our 2.2 input with 400.
    await payerSpeaks('2.1');
    const refused = await page.request.post(`${api}/$next-question`, { data: answered });
    expect(refused.status()).toBe(502);
    const refusal = ((await refused.json()) as { issue: Array<{ diagnostics: string }> }).issue[0]!.diagnostics;
    expect(refusal).toContain('400');
    expect(refusal).toContain('Your answers are kept here');
    // The payer's own words stay out of what the browser gets (they may quote a patient); the status says enough.
    expect(refusal).not.toContain("one 'in' part");
    expect(await keptAnswer()).toEqual({ status: 'in-progress', answer: false });
    await payerSpeaks('2.2');

    // Failing (5xx) while the clinician clicks: the page says so and keeps the answer on screen.
    await page.reload();
    await page.waitForSelector('#form-container[data-rendered]', { timeout: 30_000 });
    await payerFaults({ failNext: 1, errorStatus: 500, paths: ['/fhir/Questionnaire/$next-question'] });
    await page.locator('[id="sleep-study-done/1|true"]').click();
    await page.locator('#next').click();
    await expect.poll(() => page.locator('#messages').textContent(), { timeout: 20_000 }).toContain('kept here');
    expect(await keptAnswer()).toEqual({ status: 'in-progress', answer: true });
    expect(await item(page, 'patient-birth-date').count()).toBe(0);
    // Once the payer answers again, the same click goes on.
    await next(page, 'asked 1 more question');
    await asked(page, 'patient-birth-date').toBe(1);

    // An adaptive form is completed by the payer only.
    const complete = await page.request.post(`${api}/$complete`, { data: {} });
    expect(complete.status()).toBe(409);
    await context.close();
  }, 180_000);
});
