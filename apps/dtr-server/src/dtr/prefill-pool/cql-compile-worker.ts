import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { OnApplicationShutdown } from '@nestjs/common';
import type { CqlTranslate } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';

/** Main → worker: one library's CQL and the CQL of the libraries it may include (name → text). */
export interface CompileRequest {
  id: number;
  text: string;
  sources: Array<[string, string]>;
}
/** Worker → main: the ELM JSON, or the translator's messages. */
export interface CompileReply {
  id: number;
  elm?: string;
  errors: string[];
}

export interface CqlCompileWorkerOptions {
  /** How long one library may take to translate; past it the worker is terminated and the library not compiled. */
  deadlineMs: number;
  /** Heap of the translator's thread in MB. */
  memoryMb?: number;
  workerFile?: URL;
}

/** Injection token of the CompileCqlOptions the server compiles payers' CQL-only libraries with. */
export const CQL_COMPILE = Symbol('CQL_COMPILE');

const defaultWorkerFile = new URL('./cql-compile.worker.js', import.meta.url);

/**
 * Translates payers' CQL-only libraries in a worker thread, one at a time, each under a deadline: compiling a large
 * library takes seconds of CPU that would otherwise stop every other request of the server. The worker is started on
 * first use and kept (the translator takes a while to load); one that passes the deadline or dies is terminated and
 * the next translation starts a fresh one. It never keeps the process alive on its own.
 */
export class CqlCompileWorker implements OnApplicationShutdown {
  private worker: { thread: Worker; ready: Promise<void> } | undefined;
  private readonly outOfMemory = new WeakSet<Worker>();
  private nextId = 0;
  /** Translations run one after another: this is the end of the chain. */
  private tail: Promise<unknown> = Promise.resolve();
  private readonly workerFile: URL;

  constructor(private readonly options: CqlCompileWorkerOptions) {
    this.workerFile = options.workerFile ?? defaultWorkerFile;
    if (!existsSync(fileURLToPath(this.workerFile)))
      throw new DtrError(
        'CONFIGURATION',
        `the CQL compile worker ${fileURLToPath(this.workerFile)} does not exist: run the server from the build (npm run build)`,
      );
  }

  /** A CqlTranslate for compileCqlOnlyLibraries. */
  readonly translate: CqlTranslate = (text, sources) => {
    const run = this.tail.then(() => this.translateNow(text, sources));
    this.tail = run.catch(() => undefined);
    return run;
  };

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.thread.terminate();
  }

  onApplicationShutdown(): Promise<void> {
    return this.close();
  }

  private start(): { thread: Worker; ready: Promise<void> } {
    const thread = new Worker(this.workerFile, {
      env: {},
      resourceLimits: { maxOldGenerationSizeMb: this.options.memoryMb ?? 1024 },
    });
    thread.unref();
    const ready = new Promise<void>((resolve, reject) => {
      thread.once('message', () => resolve());
      thread.once('exit', (code) => reject(new Error(`the CQL translator did not start (exit code ${code})`)));
    });
    ready.catch(() => undefined);
    const started = { thread, ready };
    const forget = () => {
      if (this.worker === started) this.worker = undefined;
    };
    thread.once('exit', forget);
    thread.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'ERR_WORKER_OUT_OF_MEMORY') this.outOfMemory.add(thread);
      forget();
    });
    return started;
  }

  private async translateNow(
    text: string,
    sources: ReadonlyMap<string, string>,
  ): Promise<{ elm?: string; errors: string[] }> {
    const started = (this.worker ??= this.start());
    const worker = started.thread;
    // Kept alive while it works (a CLI waits for it), let go when idle.
    worker.ref();
    try {
      // The translator loads before the deadline starts.
      await started.ready;
    } catch (error) {
      worker.unref();
      throw error;
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const done = () => {
        worker.unref();
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('exit', onExit);
      };
      const onMessage = (reply: CompileReply) => {
        if (reply.id !== id) return;
        done();
        resolve({ ...(reply.elm ? { elm: reply.elm } : {}), errors: reply.errors });
      };
      const onExit = (code: number) => {
        done();
        reject(
          new Error(
            this.outOfMemory.has(worker)
              ? `the CQL translator needed more memory than its limit of ${this.options.memoryMb ?? 1024} MB`
              : `the CQL translator stopped (exit code ${code})`,
          ),
        );
      };
      const timer = setTimeout(() => {
        done();
        if (this.worker === started) this.worker = undefined;
        void worker.terminate();
        reject(new Error(`the CQL did not compile within the deadline of ${this.options.deadlineMs} ms`));
      }, this.options.deadlineMs);
      worker.on('message', onMessage);
      worker.once('exit', onExit);
      worker.postMessage({ id, text, sources: [...sources] } satisfies CompileRequest);
    });
  }
}
