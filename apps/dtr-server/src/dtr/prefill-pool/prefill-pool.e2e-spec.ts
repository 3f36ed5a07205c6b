import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import childProcesses, { type ChildProcess } from 'node:child_process';
import { syncBuiltinESMExports } from 'node:module';
import { type FhirResource, HttpFhirClient, QuestionnairePackage } from '@dtr/fhir';
import { BundleReader, FhirClientReader, PatientDataReader, PrefillEngine, type PrefillResult } from '@dtr/prefill';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The prefill pool as the server runs it: the built module and its built worker (node cannot load TypeScript in a
 * worker; the e2e tier builds dist/ first), against a FHIR server over real HTTP with a bearer token.
 */
const root = path.resolve(import.meta.dirname, '../../../../..');
const built = path.join(root, 'dist/apps/dtr-server/src/dtr/prefill-pool/prefill-pool.js');
type PoolModule = typeof import('./prefill-pool.js');

const FIXTURE = path.join(root, 'apps/sandbox/fixtures/packages/home-oxygen-example');
const fixture = readdirSync(FIXTURE)
  .filter((f) => f.endsWith('.json') && f !== 'rules.json')
  .map((f) => JSON.parse(readFileSync(path.join(FIXTURE, f), 'utf8')) as FhirResource);

const TOKEN = `ehr-${randomBytes(16).toString('hex')}`;
const PATIENT = [
  { resourceType: 'Patient', id: 'p1', birthDate: '1948-07-09', name: [{ family: 'Okafor', given: ['Grace'] }] },
  { resourceType: 'DeviceRequest', id: 'o1', status: 'active', intent: 'order', subject: { reference: 'Patient/p1' } },
  {
    resourceType: 'Condition',
    id: 'c1',
    subject: { reference: 'Patient/p1' },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '389087006' }] },
  },
  {
    resourceType: 'Condition',
    id: 'c2',
    subject: { reference: 'Patient/p1' },
    code: { coding: { system: 'http://snomed.info/sct', code: '13645005' } },
  },
] as FhirResource[];

/** A FHIR endpoint over PATIENT that insists on the bearer token. */
async function ehr(): Promise<{ server: Server; base: string; tokens: Array<string | undefined> }> {
  const bundle = new BundleReader(PATIENT);
  const tokens: Array<string | undefined> = [];
  const server = createServer((req, res) => {
    void (async () => {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      tokens.push(token);
      res.setHeader('content-type', 'application/fhir+json');
      if (token !== TOKEN) {
        res.statusCode = 401;
        res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] }));
        return;
      }
      const url = new URL(req.url ?? '/', 'http://x');
      const [, , type, id] = url.pathname.split('/');
      if (id) {
        const found = await bundle.read(type!, id);
        res.statusCode = found ? 200 : 404;
        res.end(JSON.stringify(found ?? { resourceType: 'OperationOutcome', issue: [] }));
        return;
      }
      const hits = await bundle.search(type!, Object.fromEntries(url.searchParams));
      res.end(
        JSON.stringify({
          resourceType: 'Bundle',
          type: 'searchset',
          entry: hits.map((resource) => ({ resource, search: { mode: 'match' } })),
        }),
      );
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`, tokens };
}

/**
 * Records every message the worker processes are sent (jobs with their payload spread, data replies) and every data
 * request that comes back from them, on the server's side of the IPC channel.
 */
function tapMessages(): {
  toWorkers: unknown[];
  fromWorkers: unknown[];
  overPorts: unknown[];
  workers: Set<ChildProcess>;
  restore: () => void;
} {
  const toWorkers: unknown[] = [];
  const fromWorkers: unknown[] = [];
  const overPorts: unknown[] = [];
  const workers = new Set<ChildProcess>();
  // The pool forks through node:child_process; its children get their `send` as their own property at the fork.
  const cjs = childProcesses as { fork: typeof childProcesses.fork };
  const fork = cjs.fork;
  cjs.fork = ((...forkArgs: Parameters<typeof fork>) => {
    const child = fork(...forkArgs);
    workers.add(child);
    const send = child.send.bind(child) as (...a: unknown[]) => boolean;
    child.send = ((...args: unknown[]) => {
      const message = args[0] as { type?: string; payload?: object; body?: unknown };
      if (message?.type === 'job') toWorkers.push({ type: 'job', ...message.payload });
      else if (message?.type === 'answer') overPorts.push(message.body);
      else toWorkers.push(message);
      return send(...args);
    }) as typeof child.send;
    child.prependListener('message', (message: { type?: string; body?: unknown }) =>
      fromWorkers.push(message?.type === 'ask' ? message.body : message),
    );
    return child;
  }) as typeof fork;
  syncBuiltinESMExports();
  return {
    toWorkers,
    fromWorkers,
    overPorts,
    workers,
    restore: () => {
      cjs.fork = fork;
      syncBuiltinESMExports();
    },
  };
}

const comparable = (results: PrefillResult[]) =>
  results.map((r) => ({ questionnaireResponse: r.questionnaireResponse, issues: r.issues }));

describe('PrefillPool (built worker processes)', () => {
  let Pool: PoolModule['PrefillPool'];
  let server: Awaited<ReturnType<typeof ehr>>;
  const pkg = QuestionnairePackage.fromResources(fixture);
  const job = {
    pkg,
    questionnaires: pkg.questionnaires,
    patientId: 'p1',
    order: 'DeviceRequest/o1',
    user: 'Practitioner/pr1',
    igVersion: '2.2' as const,
    now: new Date('2026-11-22T12:00:00Z'),
  };
  const reader = () =>
    new FhirClientReader(new HttpFhirClient({ baseUrl: server.base, accessToken: async () => TOKEN }));

  beforeAll(async () => {
    if (!existsSync(built)) throw new Error(`${built} is missing: the e2e tier builds dist/ first (npm run test:e2e)`);
    Pool = ((await import(pathToFileURL(built).href)) as PoolModule).PrefillPool;
    server = await ehr();
  });
  afterAll(() => {
    server?.server.close();
  });

  it('gives the answers and issues of an in-thread runAll; the token never crosses to a worker', async () => {
    const tap = tapMessages();
    const pool = new Pool({ size: 2 });
    try {
      const pooled = await pool.run(job, reader());
      const inThread = await new PrefillEngine(reader()).runAll(job);
      expect(comparable(pooled)).toEqual(comparable(inThread));
      const qr = JSON.stringify(pooled[0]!.questionnaireResponse);
      expect(qr).toContain('"valueDate":"1948-07-09"');
      expect(qr).toContain('"valueBoolean":true');
      // The malformed Condition is reported by the worker's engine too.
      expect(pooled[0]!.issues.map((i) => i.code)).toContain('invalid-resource');

      // The worker asked only for resource types with an id or with search parameters; nothing else came back.
      const requests = tap.fromWorkers.filter(
        (m) => (m as { type?: string }).type === 'read' || (m as { type?: string }).type === 'search',
      );
      expect(requests.length).toBeGreaterThan(0);
      for (const request of requests) {
        const keys = Object.keys(request as object).sort();
        expect([
          ['id', 'resourceId', 'resourceType', 'type'],
          ['id', 'params', 'resourceType', 'type'],
        ]).toContainEqual(keys);
      }
      expect(requests).toContainEqual({
        type: 'read',
        id: expect.any(Number),
        resourceType: 'Patient',
        resourceId: 'p1',
      });
      expect(requests).toContainEqual({
        type: 'search',
        id: expect.any(Number),
        resourceType: 'Condition',
        params: { patient: 'p1' },
      });
      // The EHR saw the token on every request; no message to or from a worker carries it.
      expect(new Set(server.tokens)).toEqual(new Set([TOKEN]));
      expect(tap.toWorkers.length).toBeGreaterThan(0);
      // Every data reply (the direction a leak would take) was seen.
      const replies = tap.overPorts.filter((m) => (m as { ok?: boolean }).ok !== undefined);
      expect(replies.length).toBe(requests.length);
      for (const message of [...tap.toWorkers, ...tap.overPorts, ...tap.fromWorkers])
        expect(JSON.stringify(message)).not.toContain(TOKEN);
      // The package went to each worker once: a second job on the same worker names it by key only.
      await pool.run(job, reader());
      await pool.run(job, reader());
      const jobs = tap.toWorkers.filter((m) => (m as { type?: string }).type === 'job') as Array<{
        packageKey: string;
        packageResources?: unknown;
      }>;
      expect(jobs.length).toBe(3);
      expect(jobs.filter((j) => j.packageResources).length).toBeLessThanOrEqual(2);
      expect(jobs.some((j) => !j.packageResources)).toBe(true);
      expect(new Set(jobs.map((j) => j.packageKey)).size).toBe(1);
    } finally {
      tap.restore();
      await pool.close();
    }
  });

  it('queues jobs beyond its workers and answers each one', async () => {
    const pool = new Pool({ size: 1 });
    try {
      const results = await Promise.all([1, 2, 3, 4].map(() => pool.run(job, reader())));
      const expected = comparable(await new PrefillEngine(reader()).runAll(job));
      for (const result of results) expect(comparable(result)).toEqual(expected);
    } finally {
      await pool.close();
    }
  });

  it('a worker that has let a package go (it keeps 16) is sent it again, and answers the same', async () => {
    const tap = tapMessages();
    const pool = new Pool({ size: 1 });
    try {
      const expected = comparable(await new PrefillEngine(reader()).runAll(job));
      expect(comparable(await pool.run(job, reader()))).toEqual(expected);
      // Sixteen other packages (the same content plus a distinct value set) push the first one out of the worker.
      for (let i = 0; i < 16; i++) {
        const other = QuestionnairePackage.fromResources([
          ...fixture,
          { resourceType: 'ValueSet', id: `extra-${i}`, url: `http://example.org/vs/extra-${i}` } as FhirResource,
        ]);
        await pool.run({ ...job, pkg: other, questionnaires: other.questionnaires }, reader());
      }
      tap.toWorkers.length = 0;
      expect(comparable(await pool.run(job, reader()))).toEqual(expected);
      const sent = tap.toWorkers.filter((m) => (m as { type?: string }).type === 'job') as Array<{
        packageResources?: unknown;
      }>;
      expect(sent.map((m) => Boolean(m.packageResources))).toEqual([false, true]);
    } finally {
      tap.restore();
      await pool.close();
    }
  });

  it('a job that throws in its worker fails with a DtrError, and the pool keeps working', async () => {
    const pool = new Pool({ size: 1 });
    try {
      const broken = QuestionnairePackage.fromResources([
        ...fixture.filter((r) => r.resourceType !== 'Questionnaire'),
        { resourceType: 'Questionnaire', id: 'bad', item: 5 } as FhirResource,
      ]);
      const failure = await pool
        .run({ ...job, pkg: broken, questionnaires: broken.questionnaires }, reader())
        .catch((error: unknown) => error);
      // (The built module's DtrError: the same class the server throws, not the one of the TypeScript sources.)
      expect(failure).toMatchObject({
        name: 'DtrError',
        code: 'INTERNAL',
        message: expect.stringMatching(/^the prefill failed in its worker: .*not iterable/),
      });
      const threads = pool.pids;
      expect(comparable(await pool.run(job, reader()))).toEqual(
        comparable(await new PrefillEngine(reader()).runAll(job)),
      );
      expect(pool.pids).toEqual(threads);
    } finally {
      await pool.close();
    }
  });

  it('a worker that dies mid-job fails that job with a DtrError and is replaced', async () => {
    const tap = tapMessages();
    const exits: Array<{ pid: number }> = [];
    const pool = new Pool({ size: 1, onWorkerExit: (e) => exits.push(e) });
    try {
      // A reader whose first read never answers, so the job is in flight when its process dies.
      let started!: () => void;
      const inFlight = new Promise<void>((resolve) => (started = resolve));
      const stalled = new (class extends PatientDataReader {
        read(): Promise<FhirResource | undefined> {
          started();
          return new Promise(() => undefined);
        }
        search(): Promise<FhirResource[]> {
          return new Promise(() => undefined);
        }
      })();
      const running = pool.run(job, stalled).catch((error: unknown) => error);
      await inFlight;
      const [before] = pool.pids;
      const [worker] = [...tap.workers];
      worker!.kill('SIGKILL');
      const failure = await running;
      expect(failure).toMatchObject({
        name: 'DtrError',
        code: 'UPSTREAM_ERROR',
        message: expect.stringMatching(
          /stopped the process evaluating it \(signal SIGKILL\).*exhausted its resources; nothing was prefilled/,
        ),
      });
      expect(exits).toEqual([expect.objectContaining({ pid: before })]);
      expect(pool.pids).toHaveLength(1);
      expect(pool.pids[0]).not.toBe(before);
      // The replacement works (and is sent the package afresh).
      expect(comparable(await pool.run(job, reader()))).toEqual(
        comparable(await new PrefillEngine(reader()).runAll(job)),
      );
    } finally {
      tap.restore();
      await pool.close();
    }
  });

  describe("bounds on the payer's logic (our hostile fixture package)", () => {
    const HOSTILE = path.join(root, 'test/fixtures/hostile-package');
    const hostileResources = readdirSync(HOSTILE)
      .filter((f) => f.endsWith('.json') && f !== 'rules.json')
      .map((f) => JSON.parse(readFileSync(path.join(HOSTILE, f), 'utf8')) as FhirResource);
    const hostile = QuestionnairePackage.fromResources(hostileResources);
    const jobFor = (id: string) => ({
      ...job,
      pkg: hostile,
      questionnaires: hostile.questionnaires.filter((q) => q.id === id),
    });
    const answersOf = (results: PrefillResult[]) => JSON.stringify(results[0]!.questionnaireResponse['item']);

    it('a job past the deadline fails naming it, its worker is replaced, and the job queued behind it succeeds', async () => {
      const exits: Array<{ reason: string | undefined }> = [];
      const pool = new Pool({ size: 1, deadlineMs: 1500, onWorkerExit: (e) => exits.push(e) });
      try {
        const [before] = pool.pids;
        // One worker: the well-behaved job waits behind the runaway regular expression.
        const [failure, fine] = await Promise.all([
          pool.run(jobFor('hostile-regex'), reader()).catch((error: unknown) => error),
          pool.run(jobFor('well-behaved'), reader()),
        ]);
        expect(failure).toMatchObject({
          name: 'DtrError',
          code: 'UPSTREAM_TIMEOUT',
          message: expect.stringMatching(/did not finish within its deadline of 1500 ms.*nothing was prefilled/),
        });
        expect((failure as Error).message).not.toMatch(/1948|Okafor|Grace/);
        expect(answersOf(fine)).toContain('"valueDate":"1948-07-09"');
        expect(answersOf(fine)).toContain('"valueInteger":42');
        expect(pool.pids).toHaveLength(1);
        expect(pool.pids[0]).not.toBe(before);
        expect(exits).toEqual([expect.objectContaining({ reason: expect.stringMatching(/deadline/) })]);
      } finally {
        await pool.close();
      }
    });

    it('a CQL expand of a huge interval and a query over billions of tuples are stopped', async () => {
      const pool = new Pool({ size: 2, deadlineMs: 1500 });
      try {
        const failures = await Promise.all(
          ['hostile-expand', 'hostile-nested-query'].map((id) =>
            pool.run(jobFor(id), reader()).catch((error: unknown) => error),
          ),
        );
        for (const failure of failures)
          expect(failure).toMatchObject({
            name: 'DtrError',
            message: expect.stringMatching(/deadline of 1500 ms|memory than its limit/),
          });
        expect(answersOf(await pool.run(jobFor('well-behaved'), reader()))).toContain('"valueInteger":42');
      } finally {
        await pool.close();
      }
    });

    it('a worker past its memory limit fails its job naming the limit and is replaced', async () => {
      const pool = new Pool({ size: 1, memoryMb: 64, deadlineMs: 120_000 });
      try {
        const [before] = pool.pids;
        const failure = await pool.run(jobFor('hostile-expand'), reader()).catch((error: unknown) => error);
        expect(failure).toMatchObject({
          name: 'DtrError',
          code: 'UPSTREAM_ERROR',
          message: expect.stringMatching(/more memory than its limit of 64 MB/),
        });
        expect(pool.pids[0]).not.toBe(before);
        expect(answersOf(await pool.run(jobFor('well-behaved'), reader()))).toContain('"valueInteger":42');
      } finally {
        await pool.close();
      }
    }, 180_000);

    it('refuses a job past the queue cap with NOT_READY and a retry delay', async () => {
      const pool = new Pool({ size: 1, queueMax: 1, deadlineMs: 2500 });
      try {
        // Once its worker is ready, a job starts at once: the first runs, the second waits, the third is refused.
        await pool.run(jobFor('well-behaved'), reader());
        const running = pool.run(jobFor('hostile-regex'), reader()).catch((error: unknown) => error);
        const queued = pool.run(jobFor('well-behaved'), reader());
        const refused = await pool.run(jobFor('well-behaved'), reader()).catch((error: unknown) => error);
        expect(refused).toMatchObject({
          name: 'DtrError',
          code: 'NOT_READY',
          message: expect.stringMatching(/as many questionnaires as it can queue \(1 waiting\); try again in 3 s/),
          details: { retryAfterSeconds: 3 },
        });
        expect(await running).toMatchObject({ code: 'UPSTREAM_TIMEOUT' });
        expect(answersOf(await queued)).toContain('"valueInteger":42');
      } finally {
        await pool.close();
      }
    });
  });

  it('close() stops the workers and refuses new jobs; size 0 prefills in-thread', async () => {
    const pool = new Pool({ size: 2 });
    await pool.run(job, reader());
    await pool.close();
    await expect(pool.run(job, reader())).rejects.toMatchObject({ code: 'NOT_READY' });
    const inline = new Pool({ size: 0 });
    expect(inline.pids).toEqual([]);
    expect(comparable(await inline.run(job, reader()))).toEqual(
      comparable(await new PrefillEngine(reader()).runAll(job)),
    );
    await inline.close();
  });
});
