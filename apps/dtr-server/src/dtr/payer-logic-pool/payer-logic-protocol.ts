/**
 * The messages between the server and a payer logic worker process (see PayerLogicPool), over the IPC channel of
 * `child_process.fork` with the structured clone ("advanced") serialization. The envelope is the pool's; what a job
 * carries (`payload`, `result`, a question and its answer) is the business of the pool's user and its worker.
 */

/** Server → worker. */
export type ToWorker =
  | { type: 'job'; jobId: number; payload: unknown }
  /** The answer to a question the worker asked during the job (the prefill's EHR reads). */
  | { type: 'answer'; jobId: number; body: unknown };

/** Worker → server. */
export type FromWorker =
  /** Loaded and warmed up: the deadline of a job measures the job, not the start. */
  | { type: 'ready' }
  | { type: 'done'; jobId: number; result: unknown }
  /** The job threw; `code` is a DtrError code when the worker's error was one. */
  | { type: 'failed'; jobId: number; code: string; message: string }
  | { type: 'ask'; jobId: number; body: unknown }
  /** The worker no longer keeps `forget` (sent with an earlier job, since let go): send the job again, in full. */
  | { type: 'again'; jobId: number; forget: string };
