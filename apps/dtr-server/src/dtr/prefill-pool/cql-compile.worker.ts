import { translateCql } from '@dtr/fhir';
import { parentPort } from 'node:worker_threads';
import type { CompileReply, CompileRequest } from './cql-compile-worker.js';

/**
 * The CQL translator's thread (see CqlCompileWorker): translates one library at a time, so a large payer library
 * keeps this thread busy, not the server's event loop. It loads the translator and the FHIR model first, then says
 * it is ready (the deadline of a translation does not include that).
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
void translateCql("library Warm version '0'\nusing FHIR version '4.0.1'\ndefine X: 1").finally(() =>
  port.postMessage('ready'),
);
