import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FormRulesJob, ReviseJob } from './form-rules-protocol.js';

/**
 * The form rules pool as the server runs it: the built module and its built worker (node cannot load TypeScript in a
 * worker; the e2e tier builds dist/ first).
 */
const root = path.resolve(import.meta.dirname, '../../../../..');
const built = path.join(root, 'dist/apps/dtr-server/src/dtr/forms/form-rules-pool.js');
type PoolModule = typeof import('./form-rules-pool.js');

const SDC = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/';
/** `(a+)+$` backtracks for ever on a run of a's that does not end there. */
const HOSTILE = `${'a'.repeat(40)}!`;
const QUESTIONNAIRE = {
  resourceType: 'Questionnaire',
  url: 'http://example.org/dtr/Questionnaire/pool-check',
  version: '1',
  status: 'active',
  item: [
    { linkId: 'note', type: 'string' },
    { linkId: 'smoker', type: 'boolean' },
    { linkId: 'packs', type: 'integer', enableWhen: [{ question: 'smoker', operator: '=', answerBoolean: true }] },
    {
      linkId: 'note-ok',
      type: 'boolean',
      readOnly: true,
      extension: [
        {
          url: `${SDC}sdc-questionnaire-calculatedExpression`,
          valueExpression: {
            language: 'text/fhirpath',
            expression: "%resource.item.where(linkId = 'note').answer.value.matches('^(a+)+$')",
          },
        },
      ],
    },
  ],
};
const FORM = {
  questionnaire: QUESTIONNAIRE,
  valueSets: [],
  igVersion: '2.2' as const,
  prefill: { resourceType: 'QuestionnaireResponse', item: [] },
};

function save(note: string, complete = false): ReviseJob {
  return {
    op: 'revise',
    form: FORM,
    submitted: {
      resourceType: 'QuestionnaireResponse',
      item: [
        { linkId: 'note', answer: [{ valueString: note }] },
        { linkId: 'smoker', answer: [{ valueBoolean: false }] },
        { linkId: 'packs', answer: [{ valueInteger: 2 }] },
      ],
    },
    previous: undefined,
    author: { practitioner: 'Practitioner/pr1' },
    meta: {
      subject: 'Patient/p1',
      authored: '2026-12-05T10:00:00Z',
      orders: ['DeviceRequest/o1'],
      questionnaireCanonical: `${QUESTIONNAIRE.url}|1`,
    },
    complete,
  };
}
const SUBJECT = { questionnaire: 'Pool check' };

describe('FormRulesPool (built worker processes)', () => {
  let Pool: PoolModule['FormRulesPool'];

  beforeAll(async () => {
    if (!existsSync(built)) throw new Error(`${built} is missing: the e2e tier builds dist/ first (npm run test:e2e)`);
    Pool = ((await import(pathToFileURL(built).href)) as PoolModule).FormRulesPool;
  });

  describe('with workers', () => {
    let inThread: InstanceType<PoolModule['FormRulesPool']>;
    beforeAll(() => {
      inThread = new Pool({ size: 0 });
    });
    afterAll(() => inThread.close());

    it('gives the same judgement in a worker as in the request thread: recomputed, pruned, refused alike', async () => {
      const pool = new Pool({ size: 1 });
      try {
        const saved = await pool.run(save('aaa'), SUBJECT);
        if (!saved.ok) throw new Error(JSON.stringify(saved.problems));
        // A calculated value the page changed is refused.
        const tampered = save('aaa');
        tampered.submitted = {
          resourceType: 'QuestionnaireResponse',
          item: [
            { linkId: 'note', answer: [{ valueString: 'aaa' }] },
            { linkId: 'note-ok', answer: [{ valueBoolean: false }] },
          ],
        };
        expect(await pool.run(tampered, SUBJECT)).toMatchObject({
          ok: false,
          problems: [{ linkId: 'note-ok', code: 'calculated-changed' }],
        });
        const jobs: FormRulesJob[] = [
          save('aaa'),
          save('ab', true),
          tampered,
          { op: 'merge', form: FORM, saved: saved.response },
        ];
        for (const job of jobs) expect(await pool.run(job, SUBJECT)).toEqual(await inThread.run(job, SUBJECT));
        // What the rules decided: the calculated value, the disabled item's answer gone.
        const items = saved.response['item'] as Array<{ linkId: string; answer?: unknown[] }>;
        expect(items.find((i) => i.linkId === 'note-ok')?.answer).toMatchObject([{ valueBoolean: true }]);
        expect(items.find((i) => i.linkId === 'packs')).toBeUndefined();
      } finally {
        await pool.close();
      }
    });

    it('stops rules past the deadline (worker replaced), refuses past the queue cap, then serves again', async () => {
      const stopped: number[] = [];
      const pool = new Pool({
        size: 1,
        queueMax: 1,
        deadlineMs: 1500,
        onWorkerExit: ({ pid }) => stopped.push(pid),
      });
      try {
        // Once its worker is ready a job starts at once: the first runs, the second waits, the third is refused.
        await pool.run(save('a'), SUBJECT);
        const [before] = pool.pids;
        const running = pool.run(save(HOSTILE), SUBJECT).catch((error: unknown) => error);
        const queued = pool.run(save(HOSTILE, true), SUBJECT).catch((error: unknown) => error);
        const refused = await pool.run(save('a'), SUBJECT).catch((error: unknown) => error);
        expect(refused).toMatchObject({
          name: 'DtrError',
          code: 'NOT_READY',
          message: expect.stringMatching(/checking as many forms as it can queue \(1 waiting\); nothing was saved/),
          details: { retryAfterSeconds: 2 },
        });
        for (const failure of [await running, await queued])
          expect(failure).toMatchObject({
            name: 'DtrError',
            code: 'UPSTREAM_TIMEOUT',
            message:
              `the payer's rules of the questionnaire "Pool check" (its calculatedExpression, enableWhenExpression ` +
              'and variable expressions) did not finish within their deadline of 1500 ms; this save was not applied: ' +
              'nothing was stored here or in the EHR, and the draft saved before stands',
          });
        expect(stopped).toContain(before);
        expect(pool.pids[0]).not.toBe(before);
        expect(await pool.run(save('aa'), SUBJECT)).toMatchObject({ ok: true });
      } finally {
        await pool.close();
      }
    });
  });

  it('close() stops the workers and refuses new jobs; size 0 runs the rules in the calling thread', async () => {
    const pool = new Pool({ size: 2 });
    expect(pool.pids).toHaveLength(2);
    await pool.close();
    await expect(pool.run(save('a'), SUBJECT)).rejects.toMatchObject({
      code: 'NOT_READY',
      message: 'the server is shutting down; the form was not saved',
    });
    const inline = new Pool({ size: 0 });
    expect(inline.pids).toEqual([]);
    expect(await inline.run(save('a'), SUBJECT)).toMatchObject({ ok: true });
    await inline.close();
  });
});
