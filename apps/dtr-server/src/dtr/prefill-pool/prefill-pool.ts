import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import type { OnApplicationShutdown } from '@nestjs/common';
import type { FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { DtrError, isDtrErrorCode } from '@dtr/kernel';
import {
  CodeInUnsupportedError,
  type PatientDataReader,
  PrefillEngine,
  type PrefillRequest,
  type PrefillResult,
} from '@dtr/prefill';
import {
  type DataReply,
  dataRequest,
  type JobMessage,
  type PrefillJobContext,
  type WorkerMessage,
} from './prefill-protocol.js';

/** One patient's prefill of several questionnaires of one package (what `PrefillEngine.runAll` takes). */
export type PrefillJob = Omit<PrefillRequest, 'questionnaire' | 'session'> & {
  questionnaires: FhirResource[];
};

export interface PrefillPoolOptions {
  /** Worker threads; 0 prefills on the calling thread (no isolation: for comparison and small deployments). */
  size: number;
  /** The worker's entry module; by default the built `prefill.worker.js` beside this module. */
  workerFile?: URL;
  /** Told about workers that stop unexpectedly or are stopped at the deadline (never about data). */
  onWorkerExit?: (event: { threadId: number; exitCode: number; reason: string | undefined }) => void;
  /**
   * How long a job may run in its worker; past it the worker is terminated (whatever the payer's logic was doing: a
   * runaway regular expression, a huge expand, a long nested query) and replaced, and the job fails. Default 5000.
   */
  deadlineMs?: number;
  /** Jobs that may wait for a worker; past it `run` refuses with NOT_READY (503) and a retry delay. Default 32. */
  queueMax?: number;
  /** Heap (old generation) of each worker in MB; a worker past it dies and its job fails. Default 512. */
  memoryMb?: number;
  /** Stack of each worker in MB (bounds deep recursion). Default 4. */
  stackMb?: number;
}

export const PREFILL_LIMIT_DEFAULTS = { deadlineMs: 5_000, queueMax: 32, memoryMb: 512, stackMb: 4 } as const;

interface Job {
  id: number;
  job: PrefillJob;
  reader: PatientDataReader;
  resolve: (results: PrefillResult[]) => void;
  reject: (error: Error) => void;
  /** The package was already sent once with this job (a worker asking for it twice is a bug, not an eviction). */
  packageResent?: boolean;
}

interface Slot {
  worker: Worker;
  /** Kept: a Worker's own threadId reads -1 once it has exited. */
  threadId: number;
  /** Keys of the packages this worker has been sent (it may have evicted some: it then asks again). */
  packages: Set<string>;
  current: { job: Job; port: MessagePort } | undefined;
  ready: boolean;
  lastError: string | undefined;
  /** The worker died of its heap limit (its `error` event said so). */
  outOfMemory: boolean;
  /** Being terminated (deadline): given no more jobs; its exit replaces it. */
  retiring: boolean;
  deadline: NodeJS.Timeout | undefined;
}

const defaultWorkerFile = new URL('./prefill.worker.js', import.meta.url);
/** Workers that die before they are ready this many times in a row mean a broken installation: stop replacing them. */
const MAX_START_FAILURES = 3;

/**
 * Runs prefills in worker threads so that CQL evaluation never blocks the server's event loop (health checks,
 * launches and other users' requests stay fast while a large patient is evaluated).
 *
 * The EHR token stays on the main thread: a worker's engine reads patient data through a MessagePort, and the main
 * thread answers each read or search with the session's own reader. A package goes to each worker once, as plain
 * JSON, keyed by a hash of its content, and the worker keeps it prepared. Jobs queue while every worker is busy; a
 * worker that stops is replaced and its job fails with a DtrError; `close` terminates the workers.
 */
export class PrefillPool implements OnApplicationShutdown {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private readonly workerFile: URL;
  private nextJob = 0;
  private closed = false;
  private startFailures = 0;
  private broken: string | undefined;
  private readonly keys = new WeakMap<QuestionnairePackage, { key: string; resources: FhirResource[] }>();
  private readonly limits: Required<Pick<PrefillPoolOptions, 'deadlineMs' | 'queueMax' | 'memoryMb' | 'stackMb'>>;

  constructor(private readonly options: PrefillPoolOptions) {
    if (!Number.isInteger(options.size) || options.size < 0)
      throw new DtrError('CONFIGURATION', 'the prefill pool size must be a whole number, 0 or more');
    this.limits = {
      deadlineMs: options.deadlineMs ?? PREFILL_LIMIT_DEFAULTS.deadlineMs,
      queueMax: options.queueMax ?? PREFILL_LIMIT_DEFAULTS.queueMax,
      memoryMb: options.memoryMb ?? PREFILL_LIMIT_DEFAULTS.memoryMb,
      stackMb: options.stackMb ?? PREFILL_LIMIT_DEFAULTS.stackMb,
    };
    this.workerFile = options.workerFile ?? defaultWorkerFile;
    if (options.size > 0 && !existsSync(fileURLToPath(this.workerFile))) {
      throw new DtrError(
        'CONFIGURATION',
        `the prefill worker ${fileURLToPath(this.workerFile)} does not exist: run the server from the build (npm run build), or set DTR_PREFILL_WORKERS=0 to prefill in-thread`,
      );
    }
    for (let i = 0; i < options.size; i++) this.slots.push(this.spawn());
  }

  /** Worker threads (0: prefills run on the calling thread). */
  get size(): number {
    return this.options.size;
  }

  /** The live workers' thread ids (supervision and tests). */
  get threadIds(): number[] {
    return this.slots.map((s) => s.threadId);
  }

  /** Prefills the job's questionnaires, in order; patient data is read with `reader` on this thread. */
  run(job: PrefillJob, reader: PatientDataReader): Promise<PrefillResult[]> {
    if (this.closed)
      return Promise.reject(new DtrError('NOT_READY', 'the server is shutting down; the prefill was not started'));
    if (this.options.size === 0) return new PrefillEngine(reader).runAll(job);
    if (this.broken) return Promise.reject(new DtrError('INTERNAL', `prefill workers cannot start: ${this.broken}`));
    if (this.queue.length >= this.limits.queueMax) {
      // Every worker is busy and the queue is full: a running job ends within the deadline.
      const retryAfterSeconds = Math.max(1, Math.ceil(this.limits.deadlineMs / 1000));
      return Promise.reject(
        new DtrError(
          'NOT_READY',
          `the server is prefilling as many questionnaires as it can queue (${this.limits.queueMax} waiting); try again in ${retryAfterSeconds} s`,
          { details: { retryAfterSeconds } },
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextJob++, job: { ...job, now: job.now ?? new Date() }, reader, resolve, reject });
      this.dispatch();
    });
  }

  /** Terminates the workers; queued and running jobs fail with NOT_READY. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const stopping = new DtrError('NOT_READY', 'the server is shutting down; the prefill was stopped');
    for (const job of this.queue.splice(0)) job.reject(stopping);
    await Promise.all(
      this.slots.splice(0).map((slot) => {
        if (slot.current) this.finish(slot, (job) => job.reject(stopping));
        return slot.worker.terminate();
      }),
    );
  }

  onApplicationShutdown(): Promise<void> {
    return this.close();
  }

  private spawn(): Slot {
    // No environment: the worker needs no settings, and secrets in the environment stay out of it.
    const worker = new Worker(this.workerFile, {
      env: {},
      stdout: false,
      stderr: false,
      resourceLimits: { maxOldGenerationSizeMb: this.limits.memoryMb, stackSizeMb: this.limits.stackMb },
    });
    const slot: Slot = {
      worker,
      threadId: worker.threadId,
      packages: new Set(),
      current: undefined,
      ready: false,
      lastError: undefined,
      outOfMemory: false,
      retiring: false,
      deadline: undefined,
    };
    worker.on('message', (message: WorkerMessage) => this.onWorkerMessage(slot, message));
    worker.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'ERR_WORKER_OUT_OF_MEMORY') slot.outOfMemory = true;
      slot.lastError = error.message.slice(0, 300);
    });
    worker.on('exit', (exitCode) => this.onExit(slot, exitCode));
    return slot;
  }

  private onExit(slot: Slot, exitCode: number): void {
    const index = this.slots.indexOf(slot);
    if (index < 0) return; // terminated by close()
    const reason = slot.lastError;
    this.options.onWorkerExit?.({ threadId: slot.threadId, exitCode, reason });
    this.finish(slot, (job) =>
      job.reject(
        slot.outOfMemory
          ? new DtrError(
              'UPSTREAM_ERROR',
              `the prefill needed more memory than its limit of ${this.limits.memoryMb} MB: the payer's logic (CQL or FHIRPath expressions) builds too much; nothing was prefilled`,
            )
          : new DtrError(
              'INTERNAL',
              `the prefill worker stopped unexpectedly (exit code ${exitCode}${reason ? `: ${reason}` : ''}); nothing was prefilled, try again`,
            ),
      ),
    );
    if (!slot.ready && ++this.startFailures >= MAX_START_FAILURES) {
      this.broken = reason ?? `exit code ${exitCode}`;
      this.slots.splice(index, 1);
      if (this.slots.length === 0)
        for (const job of this.queue.splice(0))
          job.reject(new DtrError('INTERNAL', `prefill workers cannot start: ${this.broken}`));
      return;
    }
    this.slots[index] = this.spawn();
    this.dispatch();
  }

  private onWorkerMessage(slot: Slot, message: WorkerMessage): void {
    if (message.type === 'ready') {
      slot.ready = true;
      this.startFailures = 0;
      this.dispatch();
      return;
    }
    const current = slot.current;
    if (!current || current.job.id !== message.jobId) return;
    if (message.type === 'need-package') {
      const job = current.job;
      slot.packages.delete(this.packageOf(job.job.pkg).key);
      this.finish(slot, () => undefined);
      if (job.packageResent) {
        job.reject(new DtrError('INTERNAL', 'the prefill worker did not keep the package it was sent'));
      } else {
        job.packageResent = true;
        this.queue.unshift(job);
      }
    } else if (message.type === 'done') {
      this.finish(slot, (job) => job.resolve(message.results));
    } else {
      const code = isDtrErrorCode(message.code) ? message.code : 'INTERNAL';
      this.finish(slot, (job) =>
        job.reject(new DtrError(code, `the prefill failed in its worker: ${message.message}`)),
      );
    }
    this.dispatch();
  }

  /** Ends the slot's current job (closing its data channel) and settles it. */
  private finish(slot: Slot, settle: (job: Job) => void): void {
    const current = slot.current;
    if (!current) return;
    slot.current = undefined;
    clearTimeout(slot.deadline);
    slot.deadline = undefined;
    current.port.close();
    settle(current.job);
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      // A worker still loading its engine is not sent a job yet: the deadline measures the job, not the start.
      if (slot.current || !slot.ready || slot.retiring) continue;
      this.start(slot, this.queue.shift()!);
    }
  }

  /** The job ran past the deadline: it fails, and its worker (still running the payer's logic) is terminated. */
  private expire(slot: Slot): void {
    const deadlineMs = this.limits.deadlineMs;
    this.finish(slot, (job) =>
      job.reject(
        new DtrError(
          'UPSTREAM_TIMEOUT',
          `the prefill did not finish within its deadline of ${deadlineMs} ms: the payer's logic (CQL or FHIRPath expressions) takes too long; nothing was prefilled`,
        ),
      ),
    );
    slot.retiring = true;
    slot.lastError = `stopped at the prefill deadline (${deadlineMs} ms)`;
    // Its exit (onExit) replaces it.
    void slot.worker.terminate();
  }

  private start(slot: Slot, job: Job): void {
    const { pkg, questionnaires, now, ...rest } = job.job;
    const indexes: number[] = [];
    for (const questionnaire of questionnaires) {
      let i = pkg.questionnaires.indexOf(questionnaire);
      if (i < 0)
        i = pkg.questionnaires.findIndex((q) => pkg.questionnaireKey(q) === pkg.questionnaireKey(questionnaire));
      if (i < 0) {
        job.reject(
          new DtrError('INTERNAL', `questionnaire ${pkg.questionnaireKey(questionnaire)} is not in the package`),
        );
        this.dispatch();
        return;
      }
      indexes.push(i);
    }
    const { key, resources } = this.packageOf(pkg);
    const channel = new MessageChannel();
    slot.current = { job, port: channel.port1 };
    slot.deadline = setTimeout(() => this.expire(slot), this.limits.deadlineMs);
    this.serve(channel.port1, job.reader);
    const context: PrefillJobContext = { ...rest, now: (now ?? new Date()).toISOString() };
    const message: JobMessage = {
      type: 'job',
      jobId: job.id,
      packageKey: key,
      ...(slot.packages.has(key) ? {} : { packageResources: resources }),
      questionnaires: indexes,
      context,
      port: channel.port2,
    };
    slot.packages.add(key);
    slot.worker.postMessage(message, [channel.port2]);
  }

  /** Answers the worker's reads and searches with the session's reader (which holds the EHR client). */
  private serve(port: MessagePort, reader: PatientDataReader): void {
    port.on('message', (raw: unknown) => {
      const parsed = dataRequest.safeParse(raw);
      if (!parsed.success) {
        const id = typeof (raw as { id?: unknown })?.id === 'number' ? (raw as { id: number }).id : -1;
        port.postMessage({ id, ok: false, message: 'malformed data request' } satisfies DataReply);
        return;
      }
      const request = parsed.data;
      const answer =
        request.type === 'read'
          ? reader.read(request.resourceType, request.resourceId).then((r) => (r ? [r] : []))
          : reader.search(request.resourceType, request.params);
      const reply = (message: DataReply) => {
        try {
          port.postMessage(message);
        } catch (error) {
          // Data that cannot be copied to the worker (nested too deeply, say) fails this one request, not the server.
          port.postMessage({
            id: request.id,
            ok: false,
            message: `the EHR data could not be passed on: ${error instanceof Error ? error.message : 'error'}`,
          } satisfies DataReply);
        }
      };
      answer.then(
        (resources) => reply({ id: request.id, ok: true, resources }),
        (error: unknown) =>
          reply({
            id: request.id,
            ok: false,
            message: error instanceof Error ? error.message : 'request failed',
            ...(error instanceof CodeInUnsupportedError ? { reason: error.reason } : {}),
          }),
      );
    });
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
