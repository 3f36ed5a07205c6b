import type { OnApplicationShutdown } from '@nestjs/common';
import { type CqlTranslate, translateCql } from '@dtr/fhir';
import {
  PAYER_LOGIC_LIMIT_DEFAULTS,
  type PayerLogicLimits,
  PayerLogicPool,
  type PayerLogicWords,
  type WorkerExit,
} from '../payer-logic-pool/payer-logic-pool.js';
import { type CompileReply, type CompileRequest, TRANSLATOR_EXHAUST_TEST_HOOK } from './cql-compile-protocol.js';

export interface CqlCompilePoolOptions extends Partial<Omit<PayerLogicLimits, 'deadlineMs'>> {
  /** How long one library may take to translate; past it the translator is killed and the library not compiled. */
  deadlineMs: number;
  /** The translator's entry module; by default the built `cql-compile.worker.js` beside this module. */
  workerFile?: URL;
  /** Told about a translator that stops unexpectedly or is stopped at the deadline (never about the CQL). */
  onWorkerExit?: (event: WorkerExit) => void;
}

/** Injection token of the CompileCqlOptions the server compiles payers' CQL-only libraries with. */
export const CQL_COMPILE = Symbol('CQL_COMPILE');

const defaultWorkerFile = new URL('./cql-compile.worker.js', import.meta.url);

/** What a library that was not translated is reported with (after "… ships CQL only and the translator failed: "). */
const WORDS: PayerLogicWords = {
  busy: (queueMax, retryAfterSeconds) =>
    `the server is translating as many CQL libraries as it can queue (${queueMax} waiting); try again in ${retryAfterSeconds} s`,
  shuttingDown: 'the server is shutting down; the translation was stopped',
  deadline: (deadlineMs) => `the CQL did not compile within the deadline of ${deadlineMs} ms`,
  exhausted: (cause) => `the translation ${cause}; the translator was restarted`,
  failed: (message) => message,
};

/**
 * Translates payers' CQL-only libraries in a worker PROCESS of its own (a PayerLogicPool of one), one library at a
 * time, each under a deadline, a heap and a stack limit: compiling a large library takes seconds of CPU that would
 * otherwise stop every other request of the server, and a library that makes the translator exhaust its heap must
 * not abort the server (V8 aborts the whole process when one array outgrows a worker thread's heap limit). The
 * process is started on first use and kept between libraries (the translator takes a while to load); one that passes
 * the deadline or dies for any reason is replaced, and its library is reported not compiled.
 */
export class CqlCompilePool implements OnApplicationShutdown {
  private readonly pool: PayerLogicPool;

  constructor(options: CqlCompilePoolOptions) {
    this.pool = new PayerLogicPool({
      size: 1,
      lazy: true,
      name: 'CQL translator',
      workerFile: options.workerFile ?? defaultWorkerFile,
      deadlineMs: options.deadlineMs,
      queueMax: options.queueMax ?? PAYER_LOGIC_LIMIT_DEFAULTS.queueMax,
      memoryMb: options.memoryMb ?? 1024,
      stackMb: options.stackMb ?? PAYER_LOGIC_LIMIT_DEFAULTS.stackMb,
      passEnv: [TRANSLATOR_EXHAUST_TEST_HOOK],
      ...(options.onWorkerExit ? { onWorkerExit: options.onWorkerExit } : {}),
    });
  }

  /** The translator's process id, once started (supervision and tests). */
  get pids(): number[] {
    return this.pool.pids;
  }

  /** A CqlTranslate for compileCqlOnlyLibraries. */
  readonly translate: CqlTranslate = (text, sources) =>
    this.pool.run<CompileReply>({
      words: WORDS,
      payload: () => ({ text, sources: [...sources] }) satisfies CompileRequest,
      inThread: () => translateCql(text, sources),
    });

  /** Kills the translator; a translation under way fails (its library is reported not compiled). */
  close(): Promise<void> {
    return this.pool.close();
  }

  onApplicationShutdown(): Promise<void> {
    return this.close();
  }
}
