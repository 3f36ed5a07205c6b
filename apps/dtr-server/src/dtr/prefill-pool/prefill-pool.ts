import { createHash } from 'node:crypto';
import type { OnApplicationShutdown } from '@nestjs/common';
import type { FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';
import {
  CodeInUnsupportedError,
  type PatientDataReader,
  PrefillEngine,
  type PrefillRequest,
  type PrefillResult,
} from '@dtr/prefill';
import {
  PAYER_LOGIC_LIMIT_DEFAULTS,
  type PayerLogicLimits,
  PayerLogicPool,
  type PayerLogicWords,
  type WorkerExit,
} from '../payer-logic-pool/payer-logic-pool.js';
import { type DataReply, dataRequest, type PrefillJobContext, type PrefillPayload } from './prefill-protocol.js';

/** One patient's prefill of several questionnaires of one package (what `PrefillEngine.runAll` takes). */
export type PrefillJob = Omit<PrefillRequest, 'questionnaire' | 'session'> & {
  questionnaires: FhirResource[];
};

export interface PrefillPoolOptions extends Partial<PayerLogicLimits> {
  /** Worker processes; 0 prefills on the calling thread (no isolation: for comparison and small deployments). */
  size: number;
  /** The worker's entry module; by default the built `prefill.worker.js` beside this module. */
  workerFile?: URL;
  /** Told about workers that stop unexpectedly or are stopped at the deadline (never about data). */
  onWorkerExit?: (event: WorkerExit) => void;
}

export const PREFILL_LIMIT_DEFAULTS = PAYER_LOGIC_LIMIT_DEFAULTS;

const defaultWorkerFile = new URL('./prefill.worker.js', import.meta.url);

const WORDS: PayerLogicWords = {
  busy: (queueMax, retryAfterSeconds) =>
    `the server is prefilling as many questionnaires as it can queue (${queueMax} waiting); try again in ${retryAfterSeconds} s`,
  shuttingDown: 'the server is shutting down; the prefill was stopped',
  deadline: (deadlineMs) =>
    `the prefill did not finish within its deadline of ${deadlineMs} ms: the payer's logic (CQL or FHIRPath expressions) takes too long; nothing was prefilled`,
  exhausted: (cause) =>
    `the prefill ${cause}: the payer's logic (CQL or FHIRPath expressions) exhausted its resources; nothing was prefilled`,
  failed: (message) => `the prefill failed in its worker: ${message}`,
};

/**
 * Runs prefills in worker processes (a PayerLogicPool) so that CQL evaluation never blocks the server's event loop
 * and a payer's logic that exhausts its memory kills only its own process: health checks, launches and other users'
 * requests go on while a large patient is evaluated or a hostile package fails.
 *
 * The EHR token stays in the server: a worker's engine reads patient data by asking the server over its IPC channel,
 * and the server answers each read or search with the session's own reader. A package goes to each worker once, as
 * plain JSON, keyed by a hash of its content, and the worker keeps it prepared.
 */
export class PrefillPool implements OnApplicationShutdown {
  private readonly pool: PayerLogicPool;
  private readonly keys = new WeakMap<QuestionnairePackage, { key: string; resources: FhirResource[] }>();

  constructor(options: PrefillPoolOptions) {
    this.pool = new PayerLogicPool({
      ...options,
      name: 'prefill',
      workerFile: options.workerFile ?? defaultWorkerFile,
      withoutWorkers: 'set DTR_PREFILL_WORKERS=0 to evaluate in-thread',
    });
  }

  /** Worker processes (0: prefills run on the calling thread). */
  get size(): number {
    return this.pool.size;
  }

  /** The live workers' process ids (supervision and tests). */
  get pids(): number[] {
    return this.pool.pids;
  }

  /** Prefills the job's questionnaires, in order; patient data is read with `reader` in the server. */
  run(job: PrefillJob, reader: PatientDataReader): Promise<PrefillResult[]> {
    let indexes: number[] = [];
    if (this.pool.size > 0) {
      try {
        indexes = indexesOf(job);
      } catch (error) {
        return Promise.reject(error as Error);
      }
    }
    const fixed = { ...job, now: job.now ?? new Date() };
    return this.pool.run<PrefillResult[]>({
      words: WORDS,
      inThread: () => new PrefillEngine(reader).runAll(job),
      payload: (held) => this.payload(fixed, indexes, held),
      onAsk: (body, answer) => serve(body, reader, answer),
    });
  }

  /** Kills the workers; queued and running jobs fail with NOT_READY. */
  close(): Promise<void> {
    return this.pool.close();
  }

  onApplicationShutdown(): Promise<void> {
    return this.close();
  }

  /** The job for one worker: the package by key only when that worker already holds it. */
  private payload(job: PrefillJob & { now: Date }, indexes: number[], held: Set<string>): PrefillPayload {
    const { pkg, questionnaires: _questionnaires, now, ...rest } = job;
    const { key, resources } = this.packageOf(pkg);
    const context: PrefillJobContext = { ...rest, now: now.toISOString() };
    const payload: PrefillPayload = {
      packageKey: key,
      ...(held.has(key) ? {} : { packageResources: resources }),
      questionnaires: indexes,
      context,
    };
    held.add(key);
    return payload;
  }

  /** The package as plain JSON and its content key, computed once per package object. */
  private packageOf(pkg: QuestionnairePackage): { key: string; resources: FhirResource[] } {
    let found = this.keys.get(pkg);
    if (!found) {
      const resources = [
        ...pkg.questionnaires,
        ...pkg.libraries.map((l) => l.resource),
        ...pkg.valueSets,
        ...pkg.others,
      ];
      const key = createHash('sha256').update(JSON.stringify(resources)).digest('base64url');
      this.keys.set(pkg, (found = { key, resources }));
    }
    return found;
  }
}

/** Where the job's questionnaires are in its package (a worker is sent indexes, and the package once). */
function indexesOf({ pkg, questionnaires }: PrefillJob): number[] {
  return questionnaires.map((questionnaire) => {
    let i = pkg.questionnaires.indexOf(questionnaire);
    if (i < 0) i = pkg.questionnaires.findIndex((q) => pkg.questionnaireKey(q) === pkg.questionnaireKey(questionnaire));
    if (i < 0)
      throw new DtrError('INTERNAL', `questionnaire ${pkg.questionnaireKey(questionnaire)} is not in the package`);
    return i;
  });
}

/** Answers one of the worker's reads or searches with the session's reader (which holds the EHR client). */
function serve(raw: unknown, reader: PatientDataReader, answer: (reply: DataReply) => void): void {
  const parsed = dataRequest.safeParse(raw);
  if (!parsed.success) {
    const id = typeof (raw as { id?: unknown })?.id === 'number' ? (raw as { id: number }).id : -1;
    answer({ id, ok: false, message: 'malformed data request' });
    return;
  }
  const request = parsed.data;
  const found =
    request.type === 'read'
      ? reader.read(request.resourceType, request.resourceId).then((r) => (r ? [r] : []))
      : reader.search(request.resourceType, request.params);
  const reply = (message: DataReply) => {
    try {
      answer(message);
    } catch (error) {
      // Data that cannot be copied to the worker (nested too deeply, say) fails this one request, not the server.
      answer({
        id: request.id,
        ok: false,
        message: `the EHR data could not be passed on: ${error instanceof Error ? error.message : 'error'}`,
      });
    }
  };
  found.then(
    (resources) => reply({ id: request.id, ok: true, resources }),
    (error: unknown) =>
      reply({
        id: request.id,
        ok: false,
        message: error instanceof Error ? error.message : 'request failed',
        ...(error instanceof CodeInUnsupportedError ? { reason: error.reason } : {}),
      }),
  );
}
