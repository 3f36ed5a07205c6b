import { translateCql } from '@dtr/fhir';
import { parentPort } from 'node:worker_threads';
import type { CompileReply, CompileRequest } from './cql-compile-worker.js';

/**
 * The CQL translator's thread (see CqlCompileWorker): translates one library at a time, so a large payer library
 * keeps this thread busy, not the server's event loop.
 */
const port = parentPort!;

port.on('message', (request: CompileRequest) => {
  void translateCql(request.text, new Map(request.sources)).then(
    (result) => port.postMessage({ id: request.id, ...result } satisfies CompileReply),
    (error: unknown) =>
      port.postMessage({
        id: request.id,
        errors: [`the translator failed: ${error instanceof Error ? error.message.slice(0, 300) : 'error'}`],
      } satisfies CompileReply),
  );
});
