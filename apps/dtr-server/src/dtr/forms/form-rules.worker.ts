import { compileFhirPath } from '@dtr/prefill';
import { serveJobs } from '../payer-logic-pool/payer-logic-child.js';
import { evaluateFormRules, type FormRulesJob } from './form-rules-protocol.js';

/**
 * A form rules worker process (see FormRulesPool): runs one save's rules at a time. A payer's expression that never
 * ends keeps this process busy until the pool kills it at the deadline; one that exhausts the heap kills only it.
 */
serveJobs(
  (job) => evaluateFormRules(job as FormRulesJob),
  () => {
    // FHIRPath's parser and model loaded before the first job: the deadline measures the rules, not the start.
    compileFhirPath("%resource.item.where(linkId = 'x').answer.value.exists()")(
      {},
      { resource: { resourceType: 'QuestionnaireResponse' } },
    );
  },
);
