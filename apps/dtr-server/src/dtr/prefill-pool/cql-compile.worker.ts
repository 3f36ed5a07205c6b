import { translateCql } from '@dtr/fhir';
import { serveJobs } from '../payer-logic-pool/payer-logic-child.js';
import { type CompileReply, type CompileRequest, TRANSLATOR_EXHAUST_TEST_HOOK } from './cql-compile-protocol.js';

/**
 * The CQL translator's process (see CqlCompilePool): translates one library at a time, so a large payer library keeps
 * this process busy, not the server's event loop. It loads the translator and the FHIR model first, then says it is
 * ready (the deadline of a translation does not include that).
 */
const exhaustOn = process.env[TRANSLATOR_EXHAUST_TEST_HOOK];

/** What a translator that runs out of heap on one huge collection does: grows one array until V8 gives up. */
function exhaustHeap(): never {
  const huge: number[] = [];
  for (let i = 0; ; i++) huge.push(i);
}

serveJobs(
  async (raw): Promise<CompileReply> => {
    const request = raw as CompileRequest;
    if (exhaustOn && request.text.includes(exhaustOn)) exhaustHeap();
    try {
      return await translateCql(request.text, new Map(request.sources));
    } catch (error) {
      return { errors: [`the translator failed: ${error instanceof Error ? error.message.slice(0, 300) : 'error'}`] };
    }
  },
  async () => {
    await translateCql("library Warm version '0'\nusing FHIR version '4.0.1'\ndefine X: 1");
  },
);
