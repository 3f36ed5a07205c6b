import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { launchBrowser } from './support/chromium.js';
import { type RunningDemo, startDemo } from './support/demo.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { openFormFromEhrPage } from './support/launch.js';
import { repoRoot } from './support/processes.js';

const PATIENT = 'MRN-B7';
/** Our own patient: the home-oxygen qualifying condition on record is labelled restricted and substance use. */
const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    {
      resourceType: 'Patient',
      id: PATIENT,
      identifier: [{ system: 'urn:example:mrn', value: PATIENT }],
      birthDate: '1951-02-03',
      name: [{ family: 'Lindqvist', given: ['Maja'] }],
    },
    { resourceType: 'Practitioner', id: 'b-pr', name: [{ family: 'Adeyemi', given: ['Tunde'] }] },
    sandboxCoverage('b-cov', PATIENT),
    deviceOrder('b-order', PATIENT, 'E0424'),
    {
      resourceType: 'Condition',
      id: 'b-sud',
      meta: {
        security: [
          { system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' },
          { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'SUD' },
        ],
      },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '389087006' }] },
      subject: { reference: `Patient/${PATIENT}` },
    },
  ].map((resource) => ({ resource })),
};

/**
 * A clinician sends a completed questionnaire in a real browser: the answer prefilled from a labelled Condition is
 * flagged on the review page, withheld, the response sent; the sandbox EHR then holds one copy without that answer
 * whose hash matches what the payer received byte for byte, the payer holds one submission, the status page shows the
 * payer's answer, and the audit export shows each step without the patient's data.
 */
describe('sending to the payer in a real browser', () => {
  let demo: RunningDemo;
  let browser: Browser;
  let dir: string;
  const keys = `k1:${randomBytes(32).toString('base64')}`;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'dtr-send-page-'));
    writeFileSync(path.join(dir, 'patient.json'), JSON.stringify(BUNDLE));
    demo = await startDemo(inject('adminDatabaseUrl'), 'dtr_send_page', {
      SANDBOX_BUNDLES: path.join(dir, 'patient.json'),
      DTR_ENCRYPTION_KEYS: keys,
      DTR_DATA_DIR: dir,
    });
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    await demo?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('flags, withholds, copies to the EHR, delivers once and shows the answer', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await openFormFromEhrPage(page, demo.demoUrl, { patient: PATIENT, questionnaire: 'home-oxygen' });
    await page.locator('#complete').click();
    await expect.poll(() => page.locator('#messages').textContent()).toContain('Completed');
    await page.locator('#send-link a').click();

    // The review: the answer drawn from the labelled Condition is flagged with why; sending needs the authorization.
    const flagged = page.locator('tr.sensitive[data-link-id="qualifying-condition"]');
    await expect.poll(() => flagged.count()).toBe(1);
    expect(await flagged.textContent()).toContain('SUD');
    expect(await page.locator('tr.sensitive').count()).toBe(1);
    const reviewUrl = page.url();
    await page.locator('#authorize button').click();
    await page.waitForURL(/\/app\?disclose=authorized$/);
    await page.goto(reviewUrl);
    expect(await page.locator('#authorize').count()).toBe(0);
    await flagged.locator('input[value="withhold"]').check();
    await page.locator('#send').click();
    await page.waitForURL(/\/app\/submissions\/[0-9a-f-]{36}$/);
    const submissionId = page.url().split('/').pop()!;
    await expect
      .poll(
        async () => {
          await page.reload();
          return page.locator('#submission-state').getAttribute('data-state');
        },
        { timeout: 20_000, interval: 500 },
      )
      .toBe('delivered');
    expect(await page.locator('#payer-outcome').textContent()).toBe('accepted');
    expect(await page.locator('#ehr-copy').textContent()).toContain('DocumentReference/');
    // Reached from /app too.
    await page.goto(new URL('/app/submissions', page.url()).toString());
    expect(await page.locator(`#submissions a[href="/app/submissions/${submissionId}"]`).count()).toBe(1);
    await context.close();

    // The peers: one copy in the EHR, one submission at the payer, the same bytes, no withheld answer.
    const ehr = new URL(demo.demoUrl).origin;
    const docs = (await (await fetch(`${ehr}/_sandbox/store/DocumentReference`)).json()) as {
      entry: Array<{
        resource: {
          identifier: Array<{ value: string }>;
          content: Array<{ attachment: { data: string; hash: string } }>;
        };
      }>;
    };
    const copies = docs.entry.filter((e) => e.resource.identifier.some((i) => i.value === submissionId));
    expect(copies).toHaveLength(1);
    const { data, hash } = copies[0]!.resource.content[0]!.attachment;
    const bytes = Buffer.from(data, 'base64').toString('utf8');
    expect(hash).toBe(createHash('sha1').update(bytes).digest('base64'));
    expect(bytes).not.toContain('qualifying-condition');
    const payer = new URL(demo.payerFhirBase).origin;
    const received = (
      (await (await fetch(`${payer}/_sandbox/submissions`)).json()) as Array<{
        idempotencyKey?: string;
        body: unknown;
      }>
    ).filter((s) => s.idempotencyKey === submissionId);
    expect(received).toHaveLength(1);
    expect(createHash('sha1').update(JSON.stringify(received[0]!.body)).digest('base64')).toBe(hash);

    // The audit export: each step, none of the patient's data.
    const exported = execFileSync(
      process.execPath,
      [path.join(repoRoot, 'bin/dtr.mjs'), 'audit', 'export', '--patient', PATIENT],
      {
        env: { ...process.env, DATABASE_URL: demo.db.url, DTR_ENCRYPTION_KEYS: keys, DTR_DATA_DIR: dir },
        encoding: 'utf8',
      },
    );
    const kinds = exported
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { subtype: Array<{ code: string }> }).subtype[0]!.code);
    for (const step of [
      'launch',
      'ehr-data-access',
      'qr-save',
      'disclose-authorization',
      'sensitive-choice',
      'ehr-write-back',
      'ehr-read-back',
      'delivery-attempt',
      'payer-answer',
    ])
      expect(kinds, step).toContain(step);
    for (const phi of [PATIENT, 'Lindqvist', 'Maja', '1951-02-03', 'b-sud']) expect(exported).not.toContain(phi);
  });
});
