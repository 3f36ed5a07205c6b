import type { OnApplicationShutdown } from '@nestjs/common';
import {
  type PayerLogicLimits,
  PayerLogicPool,
  type PayerLogicWords,
  type WorkerExit,
} from '../payer-logic-pool/payer-logic-pool.js';
import { evaluateFormRules, type FormRulesJob, type FormRulesResults } from './form-rules-protocol.js';

export interface FormRulesPoolOptions extends Partial<PayerLogicLimits> {
  /** Worker processes; 0 runs the rules on the calling thread (no deadline: for comparison and small deployments). */
  size: number;
  /** The worker's entry module; by default the built `form-rules.worker.js` beside this module. */
  workerFile?: URL;
  /** Told about workers that stop unexpectedly or are stopped at the deadline. */
  onWorkerExit?: (event: WorkerExit) => void;
}

/** What a failure names: the questionnaire whose rules ran (its title, or its canonical). */
export interface FormRulesSubject {
  questionnaire: string;
}

/** How a form's rules are named when they fail: the questionnaire's title, else its canonical. */
export function subjectOf(form: { questionnaire: { url: string; title?: string } }): FormRulesSubject {
  return { questionnaire: form.questionnaire.title ?? form.questionnaire.url };
}

const defaultWorkerFile = new URL('./form-rules.worker.js', import.meta.url);

/**
 * Runs the form rules of each save (the payer's calculatedExpression, enableWhenExpression and variable FHIRPath,
 * recomputed to a steady state) in worker processes under the prefill's limits (a PayerLogicPool): a payer expression
 * that backtracks or loops for ever stops that save at the deadline (504: nothing stored here or in the EHR, the draft
 * saved before stands), one that exhausts its memory kills only its own process (502), and every other request of
 * every tenant goes on.
 */
export class FormRulesPool implements OnApplicationShutdown {
  private readonly pool: PayerLogicPool;

  constructor(options: FormRulesPoolOptions) {
    this.pool = new PayerLogicPool({
      ...options,
      name: 'form rules',
      workerFile: options.workerFile ?? defaultWorkerFile,
      withoutWorkers: 'set DTR_PREFILL_WORKERS=0 to evaluate in-thread',
    });
  }

  /** The live workers' process ids (supervision and tests). */
  get pids(): number[] {
    return this.pool.pids;
  }

  /** Runs one job's rules; rejects with a DtrError naming the questionnaire when they cannot finish. */
  run<J extends FormRulesJob>(job: J, subject: FormRulesSubject): Promise<FormRulesResults[J['op']]> {
    return this.pool.run<FormRulesResults[J['op']]>({
      words: wordsFor(job, subject),
      payload: () => job,
      inThread: async () => evaluateFormRules(job) as FormRulesResults[J['op']],
    });
  }

  /** Kills the workers; queued and running jobs fail with NOT_READY. */
  close(): Promise<void> {
    return this.pool.close();
  }

  onApplicationShutdown(): Promise<void> {
    return this.close();
  }
}

/** How the failures of one job's rules are told to the clinician saving. */
function wordsFor(job: FormRulesJob, subject: FormRulesSubject): PayerLogicWords {
  return {
    busy: (queueMax, retryAfterSeconds) =>
      `the server is checking as many forms as it can queue (${queueMax} waiting); nothing was saved, try again in ${retryAfterSeconds} s`,
    shuttingDown: 'the server is shutting down; the form was not saved',
    deadline: (deadlineMs) =>
      `${rulesOf(subject)} did not finish within their deadline of ${deadlineMs} ms; ${notApplied(job)}`,
    exhausted: (cause) => `${rulesOf(subject)} ${cause}: the payer's logic exhausted its resources; ${notApplied(job)}`,
    failed: (message) => `the form rules failed in their worker: ${message}`,
  };
}

/** The payer's rules of one questionnaire, named as the cause (the title is the payer's content, not patient data). */
function rulesOf(subject: FormRulesSubject): string {
  return `the payer's rules of the questionnaire "${subject.questionnaire.slice(0, 120)}" (its calculatedExpression, enableWhenExpression and variable expressions)`;
}

/** What became of the clinician's work when a job could not finish. */
function notApplied(job: FormRulesJob): string {
  return job.op === 'revise'
    ? 'this save was not applied: nothing was stored here or in the EHR, and the draft saved before stands'
    : 'the saved answers are kept as they were';
}
