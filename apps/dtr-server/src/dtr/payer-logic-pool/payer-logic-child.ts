import { Worker } from 'node:worker_threads';
import { DtrError } from '@dtr/kernel';
import type { FromWorker, ToWorker } from './payer-logic-protocol.js';

/** One job as a worker process sees it. */
export interface ChildJob {
  jobId: number;
  /** Asks the server a question (answered through `onAnswer`). */
  ask(body: unknown): void;
  /** Receives the server's answers to this job's questions, in the order they come. */
  onAnswer(listener: (body: unknown) => void): void;
  /** Tells the server this worker no longer keeps `forget`: the job is sent again with it, and nothing is answered. */
  again(forget: string): void;
}

/**
 * The body of a payer logic worker process: answers the server's jobs one at a time with `handle`, after `warmUp`
 * (the libraries loaded before the first job, so the deadline measures the payer's logic). The process exits when
 * the server's channel closes, whatever the server died of, and is killed by its watchdog thread when the server is
 * gone during a job: a worker never outlives its server.
 */
export function serveJobs(
  handle: (payload: unknown, job: ChildJob) => unknown,
  warmUp: () => void | Promise<void>,
): void {
  const send = (message: FromWorker) => process.send!(message);
  const listeners = new Map<number, (body: unknown) => void>();
  process.on('disconnect', () => process.exit(0));
  process.on('message', (message: ToWorker) => {
    if (message?.type === 'answer') {
      listeners.get(message.jobId)?.(message.body);
      return;
    }
    if (message?.type !== 'job') return;
    const { jobId } = message;
    let settled = false;
    const job: ChildJob = {
      jobId,
      ask: (body) => send({ type: 'ask', jobId, body }),
      onAnswer: (listener) => listeners.set(jobId, listener),
      again: (forget) => {
        settled = true;
        send({ type: 'again', jobId, forget });
      },
    };
    void (async () => {
      try {
        const result = await handle(message.payload, job);
        if (!settled) send({ type: 'done', jobId, result });
      } catch (error) {
        if (!settled)
          send({
            type: 'failed',
            jobId,
            code: error instanceof DtrError ? error.code : 'INTERNAL',
            message: error instanceof Error ? error.message.slice(0, 500) : 'unknown error',
          });
      } finally {
        listeners.delete(jobId);
      }
    })();
  });
  Promise.all([watchParent(), Promise.resolve().then(warmUp)]).then(
    () => send({ type: 'ready' }),
    (error: unknown) => {
      // Never ready: the pool counts it as a worker that could not start.
      process.stderr.write(`the worker could not warm up: ${error instanceof Error ? error.message : 'error'}\n`);
      process.exit(1);
    },
  );
}

/**
 * The watchdog's code (a thread of the worker process, CommonJS). It reads this process's parent from /proc where
 * there is one (a server killed outright leaves its children to another parent), elsewhere asks whether the server's
 * process still exists, and kills the whole process as soon as the server is gone.
 */
const WATCHDOG = `
const { workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
function parentNow() {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    try {
      process.kill(workerData.parent, 0);
      return workerData.parent;
    } catch {
      return -1;
    }
  }
}
setInterval(() => {
  if (parentNow() !== workerData.parent) process.kill(workerData.pid, 'SIGKILL');
}, 500);
`;

/**
 * Starts the watchdog thread; resolves once it runs. The channel's 'disconnect' ends an idle worker, but a job runs
 * synchronous code (a translation, a runaway expression) that lets no event in: without the watchdog, a server killed
 * outright (SIGKILL, the OOM killer) would leave a busy worker running until its job ends, if ever.
 */
function watchParent(): Promise<void> {
  const watchdog = new Worker(WATCHDOG, {
    eval: true,
    workerData: { parent: process.ppid, pid: process.pid },
    env: {},
    resourceLimits: { maxOldGenerationSizeMb: 16 },
  });
  watchdog.unref();
  return new Promise((resolve) => {
    watchdog.once('online', () => resolve());
    // Without it the worker still serves (and still exits when idle and disconnected).
    watchdog.once('error', () => resolve());
  });
}
