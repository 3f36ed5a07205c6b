import type { Page } from 'playwright-core';
import { expect } from 'vitest';
import { type SeenResponse, TestBrowser } from './browser.js';

/** Where the built server and the sandbox EHR listen (a `RunningDemo` is one). */
export interface LaunchTarget {
  /** The DTR server's base URL. */
  url: string;
  /** The sandbox EHR's FHIR base: the `iss` of its launches. */
  fhirBase: string;
}

/** What the sandbox EHR puts in a launch's context: the patient, the signed-in user, the order(s) and more. */
export interface EhrLaunchContext {
  patient: string;
  user: string;
  fhirContext?: unknown[];
}

/** The answer of a prepare: the questionnaires of each payer, each with its form's id. */
export interface PreparedQuestionnaires {
  payers: Array<{ questionnaires: Array<{ formId: string }> }>;
}

/**
 * The `/launch` URL of a new EHR launch (`POST /_sandbox/launches` at the sandbox EHR), the way the EHR opens the app.
 * @see https://hl7.org/fhir/smart-app-launch/app-launch.html#launch-app-ehr-launch
 */
export async function ehrLaunchUrl(target: LaunchTarget, context: EhrLaunchContext): Promise<string> {
  const created = await fetch(`${new URL(target.fhirBase).origin}/_sandbox/launches`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(context),
  });
  expect(created.status).toBe(200);
  const { launch } = (await created.json()) as { launch: string };
  return `${target.url}/launch?iss=${encodeURIComponent(target.fhirBase)}&launch=${launch}`;
}

/** An EHR launch followed to `/app` in a cookie-keeping client (a new one unless given): a signed-in session. */
export async function launchSession(
  target: LaunchTarget,
  context: EhrLaunchContext,
  browser = new TestBrowser(),
): Promise<TestBrowser> {
  const hops = await browser.navigate(await ehrLaunchUrl(target, context));
  expect(hops.at(-1)!.url, hops.at(-1)!.body.slice(0, 400)).toBe(`${target.url}/app`);
  return browser;
}

/** `POST /api/session/questionnaires`: the session's payer packages retrieved and prefilled; the answer as seen. */
export function prepareQuestionnaires(target: LaunchTarget, browser: TestBrowser): Promise<SeenResponse> {
  return browser.request(`${target.url}/api/session/questionnaires`, { method: 'POST' });
}

/** Prepares the session, which must succeed; its answer and the id of the first payer's first form. */
export async function prepareForm(
  target: LaunchTarget,
  browser: TestBrowser,
): Promise<{ formId: string; prepared: PreparedQuestionnaires }> {
  const seen = await prepareQuestionnaires(target, browser);
  expect(seen.status, seen.body).toBe(200);
  const prepared = JSON.parse(seen.body) as PreparedQuestionnaires;
  return { formId: prepared.payers[0]!.questionnaires[0]!.formId, prepared };
}

/**
 * In a real browser, as a clinician does it: on the sandbox EHR's page, launches for the patient's order whose row
 * mentions `order` (the first order when not given), prepares, and opens the form of the questionnaire whose entry
 * mentions `questionnaire`; resolves once the form has rendered, with the text of the link that opened it.
 */
export async function openFormFromEhrPage(
  page: Page,
  demoUrl: string,
  { patient, questionnaire, order = '' }: { patient: string; questionnaire: string; order?: string },
): Promise<string> {
  await page.goto(demoUrl);
  await page
    .locator(`section.patient[data-patient="${patient}"] li`, { hasText: order })
    .locator('button', { hasText: 'Launch DTR' })
    .first()
    .click();
  await page.waitForURL(/\/app$/);
  await page.locator('#prepare').click();
  await page.waitForURL(/\/app\/questionnaires$/);
  const link = page.locator('section.questionnaire', { hasText: questionnaire }).locator('a.open-form').first();
  const linkText = (await link.textContent()) ?? '';
  await link.click();
  await page.waitForSelector('#form-container[data-rendered]', { timeout: 30_000 });
  return linkText;
}
