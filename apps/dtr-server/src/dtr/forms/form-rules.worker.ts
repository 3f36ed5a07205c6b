import { parentPort } from 'node:worker_threads';
import { compileFhirPath } from '@dtr/prefill';
import { evaluateFormRules, type FormRulesReply, type FormRulesRequest } from './form-rules-protocol.js';

/**
 * A form rules worker (see FormRulesPool): runs one save's rules at a time. A payer's expression that never ends keeps
 * this thread busy until the pool terminates it at the deadline; the server's event loop is never held.
 */
const port = parentPort!;
const send = (message: FormRulesReply) => port.postMessage(message);

port.on('message', (message: FormRulesRequest) => {
  if (message?.type !== 'job') return;
  try {
    send({ type: 'done', jobId: message.jobId, result: evaluateFormRules(message.job) });
  } catch (error) {
    send({
      type: 'failed',
      jobId: message.jobId,
      message: error instanceof Error ? error.message.slice(0, 300) : 'unknown error',
    });
  }
});
// FHIRPath's parser and model loaded before the first job: the deadline measures the rules, not the start.
compileFhirPath("%resource.item.where(linkId = 'x').answer.value.exists()")(
  {},
  { resource: { resourceType: 'QuestionnaireResponse' } },
);
send({ type: 'ready' });
