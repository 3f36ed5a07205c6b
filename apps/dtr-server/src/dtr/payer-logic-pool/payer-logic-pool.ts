import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { OnApplicationShutdown } from '@nestjs/common';
import { DtrError, isDtrErrorCode } from '@dtr/kernel';
import type { FromWorker, ToWorker } from './payer-logic-protocol.js';

/** The bounds on a payer's logic (the DTR_PREFILL_* settings; README "Limits on a payer's logic"). */
export interface PayerLogicLimits {
  /**
   * How long a job may run in its worker; past it the worker process is killed (whatever the payer's logic was doing:
   * a runaway regular expression, a huge expand, a long nested query) and replaced, and the job fails (504).
   */
  deadlineMs: number;
  /** Jobs that may wait for a worker; past it a job is refused with NOT_READY (503) and a retry delay. */
  queueMax: number;
  /** Heap (old generation) of each worker process in MB; a worker past it dies, its job fails (502). */
  memoryMb: number;
  /** Stack of each worker process in MB (bounds deep recursion). */
  stackMb: number;
}

export const PAYER_LOGIC_LIMIT_DEFAULTS: PayerLogicLimits = {
  deadlineMs: 5_000,
  queueMax: 32,
  memoryMb: 512,
  stackMb: 4,
};

/** A worker process that stopped unexpectedly or was stopped at the deadline (never about data). */
export interface WorkerExit {
  pid: number;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  reason: string | undefined;
}

export interface PayerLogicPoolOptions extends Partial<PayerLogicLimits> {
  /** Worker processes; 0 runs each job in the calling thread (no isolation: for comparison and small deployments). */
  size: number;
  /** The worker's entry module (built JavaScript that calls serveJobs). */
  workerFile: URL;
  /** What the workers evaluate, for the configuration and start-up errors: "prefill", "form rules". */
  name: string;
  /**
   * Start the worker processes with the first job instead of at once (a worker that is seldom needed, such as the CQL
   * translator, costs no memory until then). Once started, they are kept and replaced like any others.
   */
  lazy?: boolean;
  /** How to run without the workers, for the message when the worker's module is missing. */
  withoutWorkers?: string;
  /**
   * Variables of this process's environment that the workers get (by name, when set). None by default: the workers
   * get no environment, so the server's secrets stay out of them. Only for settings that are never secret.
   */
  passEnv?: readonly string[];
  onWorkerExit?: (event: WorkerExit) => void;
}

/** How a job's failures are told to the person waiting for it (each pool words them for its own users). */
export interface PayerLogicWords {
  busy(queueMax: number, retryAfterSeconds: number): string;
  shuttingDown: string;
  deadline(deadlineMs: number): string;
  /** The worker process died during the job; `cause` says of what, as far as is known. */
  exhausted(cause: string): string;
  /** The job threw in its worker. */
  failed(message: string): string;
}

export interface PayerLogicJob<R> {
  /** The job as sent to one worker; `held` names what that worker keeps from earlier jobs (add what it is sent). */
  payload(held: Set<string>): unknown;
  /** A question from the worker during the job (the prefill's EHR reads); `answer` throws if it cannot be sent. */
  onAsk?(body: unknown, answer: (body: unknown) => void): void;
  /** Runs the job in the calling thread (a pool of size 0). */
  inThread(): Promise<R>;
  words: PayerLogicWords;
}

interface Queued {
  id: number;
  job: PayerLogicJob<unknown>;
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
  /** Sent again once already because the worker had let go of what it held: a second time is a bug. */
  sentAgain?: boolean;
}

interface Slot {
  child: ChildProcess;
  pid: number;
  /** What this worker was sent with earlier jobs and keeps (it may let some go: it then asks again). */
  held: Set<string>;
  current: Queued | undefined;
  ready: boolean;
  /** The last of what the worker wrote on stderr (V8 writes its fatal errors there): read for their cause, never logged. */
  stderr: string;
  /** Why the pool stopped it (the deadline), for the exit event. */
  stoppedFor: string | undefined;
  deadline: NodeJS.Timeout | undefined;
  closed: Promise<void>;
}

/** Workers that die before they are ready this many times in a row mean a broken installation: stop replacing them. */
const MAX_START_FAILURES = 3;
/** V8's own words when a heap reaches its limit ("Reached heap limit", "JavaScript heap out of memory"). */
const OUT_OF_MEMORY = /heap limit|heap out of memory|allocation failed/i;

/**
 * A fixed number of worker PROCESSES that evaluate a payer's logic (its CQL and FHIRPath), one job each at a time,
 * with a queue of bounded length, a deadline per job and a heap limit per process.
 *
 * Processes, not worker threads: an expression that builds one huge collection grows a single array past the heap
 * limit, and V8 then aborts the whole process before Node can stop a worker thread, so a thread could not contain it.
 * A child process started with its own `--max-old-space-size` dies alone: its job fails (502), it is replaced, and
 * every other job goes on. A job past the deadline has its process killed and replaced (504). The processes get no
 * environment (no secrets) and no debugger flags, and exit when the server's channel closes, so none outlives it.
 */
export class PayerLogicPool implements OnApplicationShutdown {
  private readonly slots: Slot[] = [];
  private readonly queue: Queued[] = [];
  private readonly workerPath: string;
  private readonly limits: PayerLogicLimits;
  private nextJob = 0;
  private closed = false;
  private startFailures = 0;
  private broken: string | undefined;
  private started = false;

  constructor(private readonly options: PayerLogicPoolOptions) {
    if (!Number.isInteger(options.size) || options.size < 0)
      throw new DtrError('CONFIGURATION', `the ${options.name} pool size must be a whole number, 0 or more`);
    this.limits = {
      deadlineMs: options.deadlineMs ?? PAYER_LOGIC_LIMIT_DEFAULTS.deadlineMs,
      queueMax: options.queueMax ?? PAYER_LOGIC_LIMIT_DEFAULTS.queueMax,
      memoryMb: options.memoryMb ?? PAYER_LOGIC_LIMIT_DEFAULTS.memoryMb,
      stackMb: options.stackMb ?? PAYER_LOGIC_LIMIT_DEFAULTS.stackMb,
    };
    this.workerPath = fileURLToPath(options.workerFile);
    if (options.size > 0 && !existsSync(this.workerPath))
      throw new DtrError(
        'CONFIGURATION',
        `the ${options.name} worker ${this.workerPath} does not exist: run the server from the build (npm run build)${options.withoutWorkers ? `, or ${options.withoutWorkers}` : ''}`,
      );
    if (!options.lazy) this.start();
  }

  /** Worker processes (0: jobs run in the calling thread). */
  get size(): number {
    return this.options.size;
  }

  /** The live workers' process ids (supervision and tests). */
  get pids(): number[] {
    return this.slots.map((s) => s.pid);
  }

  run<R>(job: PayerLogicJob<R>): Promise<R> {
    if (this.closed) return Promise.reject(new DtrError('NOT_READY', job.words.shuttingDown));
    if (this.options.size === 0) return job.inThread();
    this.start();
    if (this.broken)
      return Promise.reject(new DtrError('INTERNAL', `${this.options.name} workers cannot start: ${this.broken}`));
    if (this.queue.length >= this.limits.queueMax) {
      // Every worker is busy and the queue is full: a running job ends within the deadline.
      const retryAfterSeconds = Math.max(1, Math.ceil(this.limits.deadlineMs / 1000));
      return Promise.reject(
        new DtrError('NOT_READY', job.words.busy(this.limits.queueMax, retryAfterSeconds), {
          details: { retryAfterSeconds },
        }),
      );
    }
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ id: this.nextJob++, job, resolve: resolve as (r: unknown) => void, reject });
      this.dispatch();
    });
  }

  /** Kills the worker processes and waits for them to be gone; queued and running jobs fail with NOT_READY. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const queued of this.queue.splice(0)) queued.reject(new DtrError('NOT_READY', queued.job.words.shuttingDown));
    await Promise.all(
      this.slots.splice(0).map((slot) => {
        const running = this.finish(slot);
        running?.reject(new DtrError('NOT_READY', running.job.words.shuttingDown));
        slot.child.kill('SIGKILL');
        return slot.closed;
      }),
    );
  }

  onApplicationShutdown(): Promise<void> {
    return this.close();
  }

  /** Starts the worker processes, once (at construction, or with the first job of a lazy pool). */
  private start(): void {
    if (this.started) return;
    this.started = true;
    for (let i = 0; i < this.options.size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    // No environment beyond the time zone and what the pool's user names: the payer's logic needs no settings, and
    // the server's secrets stay out of its process.
    const env: NodeJS.ProcessEnv = {};
    for (const name of ['TZ', ...(this.options.passEnv ?? [])]) if (process.env[name]) env[name] = process.env[name];
    const child = fork(this.workerPath, [], {
      // Explicit: the server's own flags (--inspect, a larger heap) are not inherited.
      execArgv: [`--max-old-space-size=${this.limits.memoryMb}`, `--stack-size=${this.limits.stackMb * 1024}`],
      serialization: 'advanced',
      env,
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    let closed!: () => void;
    const slot: Slot = {
      child,
      pid: child.pid ?? -1,
      held: new Set(),
      current: undefined,
      ready: false,
      stderr: '',
      stoppedFor: undefined,
      deadline: undefined,
      closed: new Promise((resolve) => (closed = resolve)),
    };
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => (slot.stderr = (slot.stderr + chunk).slice(-4096)));
    child.on('message', (message: FromWorker) => this.onMessage(slot, message));
    child.on('error', (error) => (slot.stoppedFor ??= error.message.slice(0, 300)));
    // 'close' (not 'exit'): stderr has been read to the end, so a fatal error's words are known.
    child.on('close', (exitCode, signal) => {
      closed();
      this.onExit(slot, exitCode, signal);
    });
    return slot;
  }

  private onExit(slot: Slot, exitCode: number | null, signal: NodeJS.Signals | null): void {
    const index = this.slots.indexOf(slot);
    if (index < 0) return; // killed by close()
    const outOfMemory = OUT_OF_MEMORY.test(slot.stderr);
    const reason = slot.stoppedFor ?? (outOfMemory ? `heap limit of ${this.limits.memoryMb} MB reached` : undefined);
    this.options.onWorkerExit?.({ pid: slot.pid, exitCode, signal, reason });
    const running = this.finish(slot);
    running?.reject(
      new DtrError(
        'UPSTREAM_ERROR',
        running.job.words.exhausted(
          outOfMemory
            ? `needed more memory than its limit of ${this.limits.memoryMb} MB`
            : `stopped the process evaluating it (${signal ? `signal ${signal}` : `exit code ${exitCode}`})`,
        ),
      ),
    );
    if (!slot.ready && ++this.startFailures >= MAX_START_FAILURES) {
      this.broken = reason ?? (signal ? `signal ${signal}` : `exit code ${exitCode}`);
      this.slots.splice(index, 1);
      if (this.slots.length === 0)
        for (const queued of this.queue.splice(0))
          queued.reject(new DtrError('INTERNAL', `${this.options.name} workers cannot start: ${this.broken}`));
      return;
    }
    try {
      this.slots[index] = this.spawn();
    } catch (error) {
      // The system refused a new process (out of process slots, say): the pool goes on with fewer workers.
      this.slots.splice(index, 1);
      this.broken =
        this.slots.length === 0 ? `a worker process could not be started: ${(error as Error).message}` : undefined;
      if (this.broken)
        for (const queued of this.queue.splice(0))
          queued.reject(new DtrError('INTERNAL', `${this.options.name} workers cannot start: ${this.broken}`));
      return;
    }
    this.dispatch();
  }

  private onMessage(slot: Slot, message: FromWorker): void {
    if (message.type === 'ready') {
      slot.ready = true;
      this.startFailures = 0;
      this.dispatch();
      return;
    }
    const current = slot.current;
    if (!current || current.id !== message.jobId) return; // a late message of a job already ended
    if (message.type === 'ask') {
      current.job.onAsk?.(message.body, (body) => {
        if (slot.current === current) this.send(slot, { type: 'answer', jobId: current.id, body });
      });
      return;
    }
    this.finish(slot);
    if (message.type === 'done') current.resolve(message.result);
    else if (message.type === 'failed') {
      const code = isDtrErrorCode(message.code) ? message.code : 'INTERNAL';
      current.reject(new DtrError(code, current.job.words.failed(message.message)));
    } else {
      slot.held.delete(message.forget);
      if (current.sentAgain) {
        current.reject(new DtrError('INTERNAL', `the ${this.options.name} worker did not keep what it was sent`));
      } else {
        current.sentAgain = true;
        this.queue.unshift(current);
      }
    }
    this.dispatch();
  }

  /** Ends the slot's current job (its deadline cleared) and hands it back to be settled. */
  private finish(slot: Slot): Queued | undefined {
    const current = slot.current;
    slot.current = undefined;
    clearTimeout(slot.deadline);
    slot.deadline = undefined;
    return current;
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      // A worker still loading is not sent a job: the deadline measures the job, not the start.
      if (slot.current || !slot.ready || slot.stoppedFor) continue;
      const queued = this.queue.shift()!;
      slot.current = queued;
      slot.deadline = setTimeout(() => this.expire(slot), this.limits.deadlineMs);
      try {
        this.send(slot, { type: 'job', jobId: queued.id, payload: queued.job.payload(slot.held) });
      } catch (error) {
        // What cannot be copied to a worker fails this job only.
        this.finish(slot);
        queued.reject(
          new DtrError(
            'INTERNAL',
            `the job could not be passed to its ${this.options.name} worker: ${(error as Error).message}`,
          ),
        );
      }
    }
  }

  /** Sends on the worker's channel; throws what cannot be serialized (a channel that closed is the exit's business). */
  private send(slot: Slot, message: ToWorker): void {
    if (!slot.child.connected) return;
    slot.child.send(message, (error) => {
      if (error) slot.stoppedFor ??= `its channel failed: ${error.message.slice(0, 200)}`;
    });
  }

  /** The job ran past the deadline: it fails, and its worker (still running the payer's logic) is killed. */
  private expire(slot: Slot): void {
    const running = this.finish(slot);
    if (!running) return;
    running.reject(new DtrError('UPSTREAM_TIMEOUT', running.job.words.deadline(this.limits.deadlineMs)));
    slot.stoppedFor = `stopped at the ${this.options.name} deadline (${this.limits.deadlineMs} ms)`;
    // Its exit (onExit) replaces it.
    slot.child.kill('SIGKILL');
  }
}
