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
 * the server's channel closes, whatever the server died of: a worker never outlives its server.
 */
export function serveJobs(handle: (payload: unknown, job: ChildJob) => unknown, warmUp: () => void): void {
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
  warmUp();
  send({ type: 'ready' });
}
