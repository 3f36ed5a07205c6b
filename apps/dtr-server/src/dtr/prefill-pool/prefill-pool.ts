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
  /** Told about workers that stop unexpectedly (never about data). */
  onWorkerExit?: (event: { threadId: number; exitCode: number; reason: string | undefined }) => void;
}

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

  constructor(private readonly options: PrefillPoolOptions) {
    if (!Number.isInteger(options.size) || options.size < 0)
      throw new DtrError('CONFIGURATION', 'the prefill pool size must be a whole number, 0 or more');
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
    const worker = new Worker(this.workerFile, { env: {}, stdout: false, stderr: false });
    const slot: Slot = {
      worker,
      threadId: worker.threadId,
      packages: new Set(),
      current: undefined,
      ready: false,
      lastError: undefined,
    };
    worker.on('message', (message: WorkerMessage) => this.onWorkerMessage(slot, message));
    worker.on('error', (error) => {
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
        new DtrError(
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
    current.port.close();
    settle(current.job);
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.current) continue;
      this.start(slot, this.queue.shift()!);
    }
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
