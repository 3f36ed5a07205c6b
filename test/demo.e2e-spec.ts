import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type RunningDemo, startDemo } from './support/demo.js';
import { launchBrowser } from './support/chromium.js';

/**
 * The README's first command, walked in a real browser (see test/support/chromium.ts): `npm start` runs our server and the
 * sandbox EHR and payer and prints one URL; from that page a clinician launches the app for an order and gets the
 * payer's questionnaire prefilled from the EHR.
 */
describe('npm start: the walkable demo in a real browser', () => {
  let demo: RunningDemo;
  let browser: Browser;
  let demoUrl: string;

  beforeAll(async () => {
    demo = await startDemo(inject('adminDatabaseUrl'), 'dtr_demo');
    demoUrl = demo.demoUrl;
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
  });

  it('prints one URL whose page lists sandbox patients with their orders', async () => {
    const page = await browser.newPage();
    await page.goto(demoUrl);
    await expect(page.locator('h1').textContent()).resolves.toBe('Sandbox EHR');
    expect(await page.locator('section.patient').count()).toBeGreaterThan(0);
    expect(await page.locator('button', { hasText: 'Launch DTR' }).count()).toBeGreaterThan(0);
    await page.close();
  });

  it('launches the app for an order and shows the payer questionnaire prefilled from the EHR', async () => {
    const page = await browser.newPage();
    await page.goto(demoUrl);
    const first = page.locator('section.patient').first();
    const patientId = await first.getAttribute('data-patient');
    await first.locator('button', { hasText: 'Launch DTR' }).first().click();
    await page.waitForURL(/\/app$/);
    await expect(page.locator('#patient').textContent()).resolves.toBeTruthy();
    expect(await page.locator('#signed-in').textContent()).toContain('Signed in as');
    await page.locator('#prepare').click();
    await page.waitForURL(/\/app\/questionnaires$/);
    // Grouped per payer: the patient's one coverage is with the sandbox payer.
    expect(await page.locator('section.payer h2').allTextContents()).toEqual([
      'Questionnaires from Sandbox Health Plan',
    ]);
    expect(await page.locator('section.questionnaire h3').first().textContent()).toContain('home-oxygen');
    const birthDate = await page.locator('tr[data-link-id="birth-date"] td.answer').textContent();
    expect(birthDate).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(patientId).toMatch(/^pat-/);
    await page.close();

    // What our server asked the EHR for, from the sandbox's own request log: only reads by id and searches scoped to
    // this patient; and never a payer token.
    const log = (await (await fetch(new URL('/_sandbox/requests', demoUrl))).json()) as Array<{
      method: string;
      path: string;
      query: Record<string, string>;
      clientId?: string;
      tokenIssuedHere?: boolean;
    }>;
    const fhir = log.filter((e) => e.path.startsWith('/fhir/') && !e.path.includes('.well-known'));
    expect(fhir.length).toBeGreaterThan(0);
    for (const request of fhir) {
      expect(request.method).toBe('GET');
      expect(request.tokenIssuedHere).toBe(true);
      const parts = request.path.split('/').filter(Boolean);
      const isRead = parts.length === 3;
      const isPatientSearch =
        parts.length === 2 &&
        (request.query['patient'] === patientId ||
          // The resume search: the patient's in-progress QuestionnaireResponses.
          (parts[1] === 'QuestionnaireResponse' && request.query['subject'] === `Patient/${patientId}`));
      expect(isRead || isPatientSearch, `${request.path} ${JSON.stringify(request.query)}`).toBe(true);
    }
    expect(fhir.some((e) => e.path === '/fhir/Condition' && e.query['patient'] === patientId)).toBe(true);
    // Minimum necessary: the package's library retrieves only Conditions, so that is the one type searched for the
    // prefill, once (plus the form's resume search for saved responses); the patient's Observations, Encounters and
    // orders of other kinds are never fetched.
    const searches = fhir.filter((e) => e.path.split('/').filter(Boolean).length === 2);
    expect(searches.map((e) => e.path).sort()).toEqual(['/fhir/Condition', '/fhir/QuestionnaireResponse']);
  });
});
