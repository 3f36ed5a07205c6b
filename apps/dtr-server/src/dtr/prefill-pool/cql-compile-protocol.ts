/** What a CQL translator process (CqlCompilePool) is sent and answers, as the payload and result of a pool job. */

/** Server → translator: one library's CQL and the CQL of the libraries it may include (name → text). */
export interface CompileRequest {
  text: string;
  sources: Array<[string, string]>;
}

/** Translator → server: the ELM JSON, or the translator's messages. */
export interface CompileReply {
  elm?: string;
  errors: string[];
}

/**
 * Test-only: given CQL that contains this variable's value, the translator grows one array until its heap gives out
 * (what a hostile library that exhausts the translator does). The translator gets the variable only when it is set.
 */
export const TRANSLATOR_EXHAUST_TEST_HOOK = 'DTR_TEST_CQL_TRANSLATOR_EXHAUST_ON';
