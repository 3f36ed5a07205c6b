import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { launchBrowser } from './support/chromium.js';
import { corpusPath, haveCorpus, NEEDS_CORPUS } from './support/corpus.js';
import { putPayerWithCli, type RunningDemo, startDemo } from './support/demo.js';
import { openFormFromEhrPage } from './support/launch.js';
import { repoRoot } from './support/processes.js';

type Answer = Record<string, unknown> & { extension?: Array<{ url: string; extension?: Ext[] }> };
type Ext = { url: string; valueCode?: string; extension?: Ext[]; valueReference?: { reference?: string } };
type Item = { linkId: string; answer?: Answer[]; item?: Item[] };
type StoredQr = { id: string; status: string; subject?: { reference?: string }; item?: Item[] };

const answersOf = (qr: StoredQr): Map<string, Answer[]> => {
  const out = new Map<string, Answer[]>();
  const walk = (items: Item[] = []) => {
    for (const item of items) {
      if (item.answer) out.set(item.linkId, item.answer);
      walk(item.item);
      for (const answer of item.answer ?? []) walk((answer as { item?: Item[] }).item);
    }
  };
  walk(qr.item);
  return out;
};
const originOf = (answer: Answer | undefined) => {
  const origin = answer?.extension?.find((e) => e.url.endsWith('information-origin'));
  return {
    source: origin?.extension?.find((e) => e.url === 'source')?.valueCode,
    author: origin?.extension?.find((e) => e.url === 'author')?.extension?.find((e) => e.url === 'practitioner')
      ?.valueReference?.reference,
  };
};

/** Rules for the sandbox payer: the corpus HomeOxygenTherapy questionnaire for a stationary oxygen order (E0424). */
function corpusRules(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dtr-corpus-rules-'));
  writeFileSync(
    path.join(dir, 'rules.json'),
    JSON.stringify({
      rules: [
        {
          codes: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: 'E0424' }],
          questionnaires: ['Questionnaire/HomeOxygenTherapy'],
        },
      ],
    }),
  );
  return dir;
}

/**
 * The corpus patient pat015's coverage names its payor by an Organization with an NPI: added (as an operator would,
 * with the CLI) to the sandbox payer's registration, which serves the corpus packages.
 */
function registerCorpusInsurer(databaseUrl: string, payerFhirBase: string): void {
  putPayerWithCli(databaseUrl, {
    id: 'sandbox-payer',
    name: 'Sandbox Health Plan',
    fhirBase: payerFhirBase,
    tokenEndpoint: `${new URL(payerFhirBase).origin}/auth/token`,
    clientId: 'dtr-backend',
    signingAlg: 'ES384',
    scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
    coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER', 'http://hl7.org/fhir/sid/us-npi|8189991234'],
  });
}

/**
 * A clinician completes a questionnaire in a real browser: from the sandbox EHR page, launch, open the form (the
 * LHC-Forms web component served from our origin), change a prefilled answer, see an enableWhen-dependent item appear
 * and a calculated value update, answer the new item, save, close the browser, relaunch from the EHR, resume with every
 * answer intact, complete. The sandbox EHR then holds one completed response with each answer's origin and author.
 */
describe('the form page in a real browser', () => {
  let demo: RunningDemo;
  let browser: Browser;
  let demoUrl: string;

  beforeAll(async () => {
    demo = await startDemo(inject('adminDatabaseUrl'), 'dtr_form_page', {
      // Our sdc-features package; with the corpus, its HomeOxygenTherapy package answering E0424 orders.
      SANDBOX_PACKAGE_DIRS: [
        path.join(repoRoot, 'apps/sandbox/fixtures/packages/sdc-features-example'),
        ...(haveCorpus
          ? [
              ...['questionnaires', 'libraries', 'valuesets'].map((d) =>
                corpusPath('packages', 'HomeOxygenTherapy', d),
              ),
              corpusRules(),
            ]
          : []),
      ].join(','),
      // Our own patient whose order (E0445) the sdc-features package answers; with the corpus, pat015 too.
      SANDBOX_BUNDLES: [
        path.join(repoRoot, 'apps/sandbox/fixtures/patients/sdc-grace-okafor.json'),
        ...(haveCorpus ? [corpusPath('patients', 'dtr-pat015-inferno.json')] : []),
      ].join(','),
    });
    demoUrl = demo.demoUrl;
    if (haveCorpus) registerCorpusInsurer(demo.db.url, demo.payerFhirBase);
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
  });

  /** Launches from the EHR page for the patient's first order and opens the named questionnaire's form. */
  const openForm = (page: Page, patient: string, questionnaire: string, order = ''): Promise<string> =>
    openFormFromEhrPage(page, demoUrl, { patient, questionnaire, order });
  const input = (page: Page, id: string) => page.locator(`[id="${id}"]`);
  const rendered = async (page: Page) => (await page.locator('#form-container').getAttribute('data-rendered')) ?? '';
  const ehrResponses = async () => {
    const store = (await (await fetch(new URL('/_sandbox/store/QuestionnaireResponse', demoUrl))).json()) as {
      entry?: Array<{ resource: StoredQr }>;
    };
    return (store.entry ?? []).map((e) => e.resource);
  };

  it('completes a questionnaire: prefilled, changed, enableWhen, calculated, saved, resumed after a relaunch, completed', async () => {
    let context = await browser.newContext();
    let page = await context.newPage();
    const first = await openForm(page, 'sdc-grace', 'sdc-features');
    expect(first).toContain('Open the form');
    // The clinician the EHR page launched as (its first, Kemi Okafor) is the author of what changes.
    expect(await page.locator('#form-status').textContent()).toContain('recorded as by Kemi Okafor');
    expect(await page.locator('#form-status').textContent()).toContain('not yet saved in the EHR');
    // Prefilled from the EHR, with where each answer came from.
    await expect(input(page, 'patient-name/1').inputValue()).resolves.toBe('Okafor');
    await expect(input(page, 'bmi/1/1').inputValue()).resolves.toBe('27.3');
    expect(await page.locator('#origins tr[data-link-id="patient-name"] .origin').textContent()).toBe('auto-client');
    // The origin also stands beside the item itself.
    const badge = page.locator('[id^="item-patient-name/"] > .origin-badge');
    expect(await badge.textContent()).toBe('auto-client');
    await page.locator('#origins tr[data-link-id="spo2-latest"] summary').click();
    expect(await page.locator('#origins tr[data-link-id="spo2-latest"] li').allTextContents()).toContain(
      'Observation/sdc-spo2-2',
    );

    // Change a prefilled answer; a calculated value follows a changed input.
    await input(page, 'patient-name/1').fill('Okafor-Reyes');
    await input(page, 'weight-kg/1/1').fill('80');
    await input(page, 'weight-kg/1/1').press('Tab');
    // 80 kg / (1.6 m)² = 31.25, shown to one decimal by the renderer.
    await expect.poll(() => input(page, 'bmi/1/1').inputValue()).toBe('31.2');
    // An item enabled by an answer appears, another disappears, and the new one is answered by hand.
    expect(await input(page, 'no-copd-reason/1').count()).toBe(0);
    await page.locator('[id="has-copd/1|false"]').click();
    await expect.poll(() => input(page, 'no-copd-reason/1').count()).toBe(1);
    expect(await page.locator('[id="item-copd-followup/1"]').count()).toBe(0);
    await input(page, 'no-copd-reason/1').fill('Nocturnal hypoxaemia');
    await input(page, 'no-copd-reason/1').press('Tab');

    const before = await rendered(page);
    await page.locator('#save').click();
    await expect.poll(() => page.locator('#messages').textContent()).toContain('Draft saved');
    expect(await rendered(page)).not.toBe(before);
    expect(await page.locator('#form-status').textContent()).toContain('saved in the EHR as QuestionnaireResponse/');
    // After the save the page shows what the server decided.
    expect(await page.locator('#origins tr[data-link-id="patient-name"] .origin').textContent()).toBe('override');
    expect(await badge.textContent()).toBe('override');
    expect(await page.locator('#origins tr[data-link-id="no-copd-reason"] .origin').textContent()).toBe('manual');
    await context.close();

    // Relaunch from the EHR in a new browser session: the saved response is resumed, every answer intact.
    context = await browser.newContext();
    page = await context.newPage();
    const resumed = await openForm(page, 'sdc-grace', 'sdc-features');
    expect(resumed).toContain('Resume');
    await expect(input(page, 'patient-name/1').inputValue()).resolves.toBe('Okafor-Reyes');
    await expect(input(page, 'no-copd-reason/1').inputValue()).resolves.toBe('Nocturnal hypoxaemia');
    await expect(input(page, 'weight-kg/1/1').inputValue()).resolves.toBe('80');
    await expect(input(page, 'bmi/1/1').inputValue()).resolves.toBe('31.2');
    await page.locator('#complete').click();
    await expect.poll(() => page.locator('#messages').textContent()).toContain('Completed');
    expect(await page.locator('#form-status').textContent()).toContain('Status: completed');
    expect(await page.locator('#save').isDisabled()).toBe(true);
    await context.close();

    // The EHR holds one response for this patient and questionnaire: completed, each answer with its origin.
    const held = (await ehrResponses()).filter((qr) => qr.subject?.reference === 'Patient/sdc-grace');
    expect(held).toHaveLength(1);
    expect(held[0]!.status).toBe('completed');
    const answers = answersOf(held[0]!);
    expect(originOf(answers.get('birth-date')?.[0])).toEqual({ source: 'auto-client', author: undefined });
    expect(answers.get('patient-name')?.[0]?.['valueString']).toBe('Okafor-Reyes');
    expect(originOf(answers.get('patient-name')?.[0])).toEqual({
      source: 'override',
      author: 'Practitioner/pr-1',
    });
    expect(answers.get('no-copd-reason')?.[0]?.['valueString']).toBe('Nocturnal hypoxaemia');
    expect(originOf(answers.get('no-copd-reason')?.[0])).toEqual({ source: 'manual', author: 'Practitioner/pr-1' });
    const bmi = answers.get('bmi')?.[0]?.['valueDecimal'] as number;
    expect(bmi).toBeGreaterThan(31.1);
    expect(bmi).toBeLessThan(31.3);
    expect(answers.has('copd-followup')).toBe(false);
  }, 180_000);

  it('names the item a save refuses, keeps the page usable, and stores nothing new in the EHR', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await openForm(page, 'sdc-grace', 'sdc-features');
    const before = await ehrResponses();
    // A value the server refuses (the page's own checks aside): a calculated item changed to another value.
    await page.evaluate(() => {
      const original = globalThis.fetch.bind(globalThis);
      globalThis.fetch = (url: Parameters<typeof fetch>[0], init?: RequestInit) => {
        if (init?.method === 'PUT' && typeof init.body === 'string') {
          const qr = JSON.parse(init.body) as {
            item?: Array<{ linkId: string; item?: Array<Record<string, unknown>> }>;
          };
          const vitals = qr.item?.find((i) => i.linkId === 'vitals');
          const bmi = vitals?.item?.find((i) => i['linkId'] === 'bmi');
          if (bmi) bmi['answer'] = [{ valueDecimal: 99 }];
          return original(url, { ...init, body: JSON.stringify(qr) });
        }
        return original(url, init);
      };
    });
    await page.locator('#save').click();
    await expect.poll(() => page.locator('#messages').textContent()).toContain('Not saved');
    expect(await page.locator('#messages li[data-link-id="bmi"]').textContent()).toContain('Body mass index');
    expect(await page.locator('#save').isDisabled()).toBe(false);
    expect(await ehrResponses()).toEqual(before);
    await context.close();
  }, 120_000);

  it.skipIf(!haveCorpus)(
    `the corpus HomeOxygenTherapy package renders and completes for pat015 ${NEEDS_CORPUS}`,
    async () => {
      const context = await browser.newContext();
      const page = await context.newPage();
      await openForm(page, 'pat015', 'HomeOxygenTherapy', 'DeviceRequest/devreq015 ');
      expect(await page.locator('#form-container input').count()).toBeGreaterThan(5);
      // Defines that failed in the payer's CQL are shown on the items they feed, which stay answerable by hand.
      const onDiagnoses = page.locator('[id^="item-3.1.1/"] > .prefill-issue');
      expect(await onDiagnoses.textContent()).toContain('RelevantDiagnoses could not be evaluated');
      const already = new Set((await ehrResponses()).map((qr) => qr.id));
      // Untouched, the prefilled form cannot be completed: each required item left empty is named.
      await page.locator('#complete').click();
      await expect.poll(() => page.locator('#messages').textContent()).toContain('need attention');
      expect(await page.locator('#messages').textContent()).toContain('an answer is required');
      expect(await page.locator('#messages li[data-link-id="SIGPNP.1"]').count()).toBe(1);

      // The clinician answers them with the renderer's own controls (date pickers, open-choice lists, numbers).
      const date = async (id: string, value: string) => {
        const field = input(page, id).locator('input');
        await field.click();
        await field.fill(value);
        await field.press('Enter');
      };
      const typed = async (id: string, value: string) => {
        await input(page, id).click();
        await input(page, id).fill(value);
        await input(page, id).press('Enter');
        await input(page, id).press('Tab');
      };
      const firstOption = async (id: string) => {
        await input(page, id).click();
        await expect.poll(() => page.locator('#lhc-tools-searchResults li').count()).toBeGreaterThan(0);
        await input(page, id).press('ArrowDown');
        await input(page, id).press('Enter');
        await input(page, id).press('Tab');
      };
      await date('PND.5/1/1', '11/20/2026');
      await typed('3.1.1/1/1/1', 'Chronic obstructive pulmonary disease');
      await typed('3.1.2/1/1/1', 'None');
      for (const [id, value] of [
        ['4.4.1/1/1/1', '2'],
        ['4.4.2/1/1/1', '88'],
        ['4.5.1/1/1/1', '2'],
        ['4.5.2/1/1/1', '89'],
      ] as const) {
        await input(page, id).fill(value);
        await input(page, id).press('Tab');
      }
      await firstOption('5.3/1/1');
      await firstOption('5.5/1/1');
      await input(page, 'SIGPNP.1/1/1').fill('Jane Betty Doe');
      await input(page, 'SIGPNP.1/1/1').press('Tab');
      await page.locator('#complete').click();
      await expect.poll(() => page.locator('#messages').textContent()).toContain('Completed');
      expect(await page.locator('#form-status').textContent()).toContain('Status: completed');
      // One new response in the EHR (the corpus patient arrives with responses of its own).
      const held = (await ehrResponses()).filter((qr) => !already.has(qr.id));
      expect(held.map((qr) => [qr.subject?.reference, qr.status])).toEqual([['Patient/pat015', 'completed']]);
      const answers = answersOf(held[0]!);
      expect(answers.get('SIGPNP.1')?.[0]?.['valueString']).toBe('Jane Betty Doe');
      expect(originOf(answers.get('SIGPNP.1')?.[0]).source).toBe('manual');
      expect(originOf(answers.get('PBD.1')?.[0]).source).toBe('auto-client');
      await context.close();
    },
    120_000,
  );
});
