import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { OnApplicationShutdown } from '@nestjs/common';
import { DtrError } from '@dtr/kernel';
import { PREFILL_LIMIT_DEFAULTS } from '../prefill-pool/prefill-pool.js';
import {
  evaluateFormRules,
  type FormRulesJob,
  type FormRulesReply,
  type FormRulesRequest,
  type FormRulesResults,
} from './form-rules-protocol.js';

export interface FormRulesPoolOptions {
  /** Worker threads; 0 runs the rules on the calling thread (no deadline: for comparison and small deployments). */
  size: number;
  /**
   * How long one save's rules may run; past it the worker is terminated and replaced and the save fails (504). The
   * limits default to the prefill's (PREFILL_LIMIT_DEFAULTS): the server passes the same settings to both pools.
   */
  deadlineMs?: number;
  /** Jobs that may wait for a busy worker; past it a save is refused with NOT_READY (503) and a retry delay. */
  queueMax?: number;
  /** Heap (old generation) of each worker in MB; a worker past it dies and its job fails (502). */
  memoryMb?: number;
  /** Stack of each worker in MB (bounds deep recursion). */
  stackMb?: number;
  /** The worker's entry module; by default the built `form-rules.worker.js` beside this module. */
  workerFile?: URL;
  /** Told about workers that stop unexpectedly or are stopped at the deadline. */
  onWorkerExit?: (event: { threadId: number; exitCode: number; reason: string | undefined }) => void;
}

/** What a failure names: the questionnaire whose rules ran (its title, or its canonical). */
export interface FormRulesSubject {
  questionnaire: string;
}

/** How a form's rules are named when they fail: the questionnaire's title, else its canonical. */
export function subjectOf(form: { questionnaire: { url: string; title?: string } }): FormRulesSubject {
  return { questionnaire: form.questionnaire.title ?? form.questionnaire.url };
}

interface Job {
  id: number;
  job: FormRulesJob;
  subject: FormRulesSubject;
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
}

interface Slot {
  worker: Worker;
  threadId: number;
  current: Job | undefined;
  ready: boolean;
  lastError: string | undefined;
  outOfMemory: boolean;
  retiring: boolean;
  deadline: NodeJS.Timeout | undefined;
}

const defaultWorkerFile = new URL('./form-rules.worker.js', import.meta.url);
/** Workers that die before they are ready this many times in a row mean a broken installation. */
const MAX_START_FAILURES = 3;

/**
 * Runs the form rules of each save (the payer's calculatedExpression, enableWhenExpression and variable FHIRPath,
 * recomputed to a steady state) in worker threads under a deadline, as the prefill pool runs the prefill: a payer
 * expression that backtracks or loops for ever stops that save (504: nothing stored here or in the EHR, the draft
 * saved before stands) and never the server's event loop, so every other request of every tenant goes on. A worker
 * past the deadline is terminated and replaced; one past its heap limit dies and is replaced.
 */
export class FormRulesPool implements OnApplicationShutdown {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private readonly workerFile: URL;
  private nextJob = 0;
  private closed = false;
  private startFailures = 0;
  private broken: string | undefined;
  private readonly limits: Required<Pick<FormRulesPoolOptions, 'deadlineMs' | 'queueMax' | 'memoryMb' | 'stackMb'>>;

  constructor(private readonly options: FormRulesPoolOptions) {
    this.limits = {
      deadlineMs: options.deadlineMs ?? PREFILL_LIMIT_DEFAULTS.deadlineMs,
      queueMax: options.queueMax ?? PREFILL_LIMIT_DEFAULTS.queueMax,
      memoryMb: options.memoryMb ?? PREFILL_LIMIT_DEFAULTS.memoryMb,
      stackMb: options.stackMb ?? PREFILL_LIMIT_DEFAULTS.stackMb,
    };
    if (!Number.isInteger(options.size) || options.size < 0)
      throw new DtrError('CONFIGURATION', 'the form rules pool size must be a whole number, 0 or more');
    this.workerFile = options.workerFile ?? defaultWorkerFile;
    if (options.size > 0 && !existsSync(fileURLToPath(this.workerFile)))
      throw new DtrError(
        'CONFIGURATION',
        `the form rules worker ${fileURLToPath(this.workerFile)} does not exist: run the server from the build (npm run build), or set DTR_PREFILL_WORKERS=0 to run the rules in-thread`,
      );
    for (let i = 0; i < options.size; i++) this.slots.push(this.spawn());
  }

  /** The live workers' thread ids (supervision and tests). */
  get threadIds(): number[] {
    return this.slots.map((s) => s.threadId);
  }

  /** Runs one job's rules; rejects with a DtrError naming the questionnaire when they cannot finish. */
  run<J extends FormRulesJob>(job: J, subject: FormRulesSubject): Promise<FormRulesResults[J['op']]> {
    if (this.closed)
      return Promise.reject(new DtrError('NOT_READY', 'the server is shutting down; the form was not saved'));
    if (this.options.size === 0) {
      try {
        return Promise.resolve(evaluateFormRules(job) as FormRulesResults[J['op']]);
      } catch (error) {
        return Promise.reject(error instanceof Error ? error : new Error(String(error)));
      }
    }
    if (this.broken) return Promise.reject(new DtrError('INTERNAL', `form rules workers cannot start: ${this.broken}`));
    if (this.queue.length >= this.limits.queueMax) {
      const retryAfterSeconds = Math.max(1, Math.ceil(this.limits.deadlineMs / 1000));
      return Promise.reject(
        new DtrError(
          'NOT_READY',
          `the server is checking as many forms as it can queue (${this.limits.queueMax} waiting); nothing was saved, try again in ${retryAfterSeconds} s`,
          { details: { retryAfterSeconds } },
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextJob++, job, subject, resolve: resolve as (r: unknown) => void, reject });
      this.dispatch();
    });
  }

  /** Terminates the workers; queued and running jobs fail with NOT_READY. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const stopping = new DtrError('NOT_READY', 'the server is shutting down; the form was not saved');
    for (const job of this.queue.splice(0)) job.reject(stopping);
    await Promise.all(
      this.slots.splice(0).map((slot) => {
        this.finish(slot)?.reject(stopping);
        return slot.worker.terminate();
      }),
    );
  }

  onApplicationShutdown(): Promise<void> {
    return this.close();
  }

  private spawn(): Slot {
    // No environment: the rules need no settings, and secrets in the environment stay out of the thread.
    const worker = new Worker(this.workerFile, {
      env: {},
      stdout: false,
      stderr: false,
      resourceLimits: { maxOldGenerationSizeMb: this.limits.memoryMb, stackSizeMb: this.limits.stackMb },
    });
    const slot: Slot = {
      worker,
      threadId: worker.threadId,
      current: undefined,
      ready: false,
      lastError: undefined,
      outOfMemory: false,
      retiring: false,
      deadline: undefined,
    };
    worker.on('message', (message: FormRulesReply) => this.onMessage(slot, message));
    worker.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'ERR_WORKER_OUT_OF_MEMORY') slot.outOfMemory = true;
      slot.lastError = error.message.slice(0, 300);
    });
    worker.on('exit', (exitCode) => this.onExit(slot, exitCode));
    return slot;
  }

  private onMessage(slot: Slot, message: FormRulesReply): void {
    if (message.type === 'ready') {
      slot.ready = true;
      this.startFailures = 0;
    } else if (slot.current?.id === message.jobId) {
      const job = this.finish(slot)!;
      if (message.type === 'done') job.resolve(message.result);
      else job.reject(new DtrError('INTERNAL', `the form rules failed in their worker: ${message.message}`));
    }
    this.dispatch();
  }

  private onExit(slot: Slot, exitCode: number): void {
    const index = this.slots.indexOf(slot);
    if (index < 0) return; // terminated by close()
    const reason = slot.lastError;
    this.options.onWorkerExit?.({ threadId: slot.threadId, exitCode, reason });
    const job = this.finish(slot);
    job?.reject(
      slot.outOfMemory
        ? new DtrError(
            'UPSTREAM_ERROR',
            `${rulesOf(job.subject)} needed more memory than their limit of ${this.limits.memoryMb} MB; ${notApplied(job.job)}`,
          )
        : new DtrError(
            'INTERNAL',
            `the form rules worker stopped unexpectedly (exit code ${exitCode}${reason ? `: ${reason}` : ''}); ${notApplied(job.job)}`,
          ),
    );
    if (!slot.ready && ++this.startFailures >= MAX_START_FAILURES) {
      this.broken = reason ?? `exit code ${exitCode}`;
      this.slots.splice(index, 1);
      if (this.slots.length === 0)
        for (const queued of this.queue.splice(0))
          queued.reject(new DtrError('INTERNAL', `form rules workers cannot start: ${this.broken}`));
      return;
    }
    this.slots[index] = this.spawn();
    this.dispatch();
  }

  /** Ends the slot's current job (its deadline cleared) and hands it back to be settled. */
  private finish(slot: Slot): Job | undefined {
    const job = slot.current;
    slot.current = undefined;
    clearTimeout(slot.deadline);
    slot.deadline = undefined;
    return job;
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      // A worker still loading is not sent a job: the deadline measures the rules, not the start.
      if (slot.current || !slot.ready || slot.retiring) continue;
      const job = this.queue.shift()!;
      slot.current = job;
      slot.deadline = setTimeout(() => this.expire(slot), this.limits.deadlineMs);
      try {
        slot.worker.postMessage({ type: 'job', jobId: job.id, job: job.job } satisfies FormRulesRequest);
      } catch (error) {
        // What cannot be copied to a worker (it came from our own stored form) fails this job only.
        this.finish(slot);
        job.reject(
          new DtrError('INTERNAL', `the form could not be passed to its rules worker: ${(error as Error).message}`),
        );
      }
    }
  }

  /** The rules ran past the deadline: the job fails, its worker (still evaluating) is terminated and replaced. */
  private expire(slot: Slot): void {
    const job = this.finish(slot);
    if (!job) return;
    const deadlineMs = this.limits.deadlineMs;
    job.reject(
      new DtrError(
        'UPSTREAM_TIMEOUT',
        `${rulesOf(job.subject)} did not finish within their deadline of ${deadlineMs} ms; ${notApplied(job.job)}`,
      ),
    );
    slot.retiring = true;
    slot.lastError = `stopped at the form rules deadline (${deadlineMs} ms)`;
    // Its exit (onExit) replaces it.
    void slot.worker.terminate();
  }
}

/** The payer's rules of one questionnaire, named as the cause (the title is the payer's content, not patient data). */
function rulesOf(subject: FormRulesSubject): string {
  return `the payer's rules of the questionnaire "${subject.questionnaire.slice(0, 120)}" (its calculatedExpression, enableWhenExpression and variable expressions)`;
}

/** What became of the clinician's work when a job could not finish. */
function notApplied(job: FormRulesJob): string {
  return job.op === 'revise'
    ? 'this save was not applied: nothing was stored here or in the EHR, and the draft saved before stands'
    : 'the saved answers are kept as they were';
}
