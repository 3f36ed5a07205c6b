import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestBrowser } from '../../../../test/support/browser.js';
import { createScratchDatabase, type ScratchDatabase } from '../../../../test/support/databases.js';
import { deviceOrder, sandboxCoverage } from '../../../../test/support/fixtures.js';
import { spawnServer, type SpawnedServer } from '../../../../test/support/processes.js';

/** A patient of our own, loaded into the sandbox EHR: one qualifying Condition, one whose coding is not a list. */
const BUNDLE = {
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    { resourceType: 'Patient', id: 'pool-p1', birthDate: '1948-07-09', name: [{ family: 'Okafor', given: ['Grace'] }] },
    sandboxCoverage('pool-cov', 'pool-p1'),
    deviceOrder('pool-order', 'pool-p1'),
    {
      resourceType: 'Condition',
      id: 'pool-c1',
      subject: { reference: 'Patient/pool-p1' },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '13645005' }] },
    },
    {
      resourceType: 'Condition',
      id: 'pool-c2',
      subject: { reference: 'Patient/pool-p1' },
      code: { coding: { system: 'http://snomed.info/sct', code: '389087006' } },
    },
  ].map((resource) => ({ resource })),
};

interface PreparedQuestionnaire {
  formId?: string;
  questionnaire: string;
  questionnaireResponse: { item?: unknown[]; authored?: string };
  issues: Array<{ code: string; message: string }>;
}
interface Prepared {
  payers: Array<{ payer: { id: string }; questionnaires: PreparedQuestionnaire[] }>;
}

/**
 * The prefill step of a launched session through the running server (`npm start`: server, sandbox EHR and payer),
 * with the worker pool and in the request thread: the same answers and issues either way.
 */
describe('prepare questionnaires through the prefill pool, against the sandbox EHR', () => {
  let db: ScratchDatabase;
  let dir: string;
  const outputs = new Map<number, string>();

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_pool');
    dir = mkdtempSync(path.join(tmpdir(), 'dtr-pool-e2e-'));
    writeFileSync(path.join(dir, 'patient.json'), JSON.stringify(BUNDLE));
  });
  afterAll(async () => {
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Starts `npm start` with the given pool size, launches for the patient's order and prepares the questionnaires. */
  async function prepare(
    workers: number,
  ): Promise<{ status: number; body: Prepared; fhirRequests: Array<{ path: string; tokenIssuedHere?: boolean }> }> {
    const app: SpawnedServer = spawnServer(
      {
        DATABASE_URL: db.url,
        DTR_PORT: '0',
        SANDBOX_EHR_PORT: '0',
        SANDBOX_PAYER_PORT: '0',
        SANDBOX_BUNDLES: path.join(dir, 'patient.json'),
        DTR_PREFILL_WORKERS: String(workers),
      },
      'scripts/start.mjs',
    );
    try {
      const url = await app.ready;
      const deadline = Date.now() + 30_000;
      while (!/Sandbox EHR: (http:\/\/\S+)/.test(app.output()) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      const fhirBase = /Sandbox EHR: (http:\/\/\S+)/.exec(app.output())![1]!;
      const ehr = new URL(fhirBase).origin;
      const created = await fetch(`${ehr}/_sandbox/launches`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          patient: 'pool-p1',
          user: 'pr-1',
          fhirContext: [{ reference: 'DeviceRequest/pool-order' }, { reference: 'Coverage/pool-cov' }],
        }),
      });
      expect(created.status).toBe(200);
      const { launch } = (await created.json()) as { launch: string };
      const browser = new TestBrowser();
      const hops = await browser.navigate(`${url}/launch?iss=${encodeURIComponent(fhirBase)}&launch=${launch}`);
      expect(hops[hops.length - 1]!.url).toBe(`${url}/app`);
      const response = await browser.request(`${url}/api/session/questionnaires`, { method: 'POST' });
      const log = (await (await fetch(`${ehr}/_sandbox/requests`)).json()) as Array<{
        path: string;
        tokenIssuedHere?: boolean;
      }>;
      // Shutdown terminates the workers: the process exits by itself, cleanly and promptly.
      const stopping = Date.now();
      app.child.kill('SIGTERM');
      expect(await app.exited).toBe(0);
      expect(Date.now() - stopping).toBeLessThan(5000);
      outputs.set(workers, app.output());
      return {
        status: response.status,
        body: JSON.parse(response.body) as Prepared,
        fhirRequests: log.filter((e) => e.path.startsWith('/fhir/') && !e.path.includes('.well-known')),
      };
    } finally {
      if (app.child.exitCode === null && app.child.signalCode === null) app.child.kill('SIGKILL');
      await app.exited;
    }
  }

  it('prefills with the pool as it does in-thread, leaving the malformed Condition out with an issue', async () => {
    const pooled = await prepare(2);
    expect(outputs.get(2)).toMatch(/"msg":"prefill workers started".*"workers":2/);
    expect(pooled.status).toBe(200);
    expect(pooled.body.payers.map((p) => p.payer.id)).toEqual(['sandbox-payer']);
    const [home] = pooled.body.payers[0]!.questionnaires;
    expect(home!.questionnaire).toBe('http://example.org/dtr/Questionnaire/home-oxygen|1.0.0');
    const qr = JSON.stringify(home!.questionnaireResponse);
    expect(qr).toContain('"valueDate":"1948-07-09"');
    expect(qr).toContain('"valueBoolean":true');
    expect(home!.issues).toContainEqual(
      expect.objectContaining({
        code: 'invalid-resource',
        message: expect.stringMatching(/^Condition\/pool-c2: code\.coding must be an array/),
      }),
    );
    // Data was read with the EHR-issued token (the one the main thread holds), patient-scoped.
    expect(pooled.fhirRequests.length).toBeGreaterThan(0);
    expect(pooled.fhirRequests.every((e) => e.tokenIssuedHere === true)).toBe(true);

    const inThread = await prepare(0);
    expect(outputs.get(0)).toMatch(/"msg":"prefill runs in the request thread"/);
    expect(inThread.status).toBe(200);
    const strip = (p: Prepared) =>
      p.payers[0]!.questionnaires.map((q) => ({
        ...q,
        // Each run opens its own form (a new id).
        formId: undefined,
        questionnaireResponse: { ...q.questionnaireResponse, authored: undefined },
      }));
    expect(strip(pooled.body)).toEqual(strip(inThread.body));
  });
});
