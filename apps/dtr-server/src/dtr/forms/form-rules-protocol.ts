import type { FhirResource } from '@dtr/fhir';
import {
  completionProblems,
  type FormAuthor,
  type FormDefinition,
  type FormProblem,
  mergeResume,
  type ResponseMeta,
  reviseResponse,
} from '@dtr/forms';

/**
 * The form rules a save runs (`@dtr/forms`: answer checks, then the questionnaire's calculatedExpression,
 * enableWhenExpression and variable FHIRPath recomputed to a steady state, then information-origin), as one job for
 * a FormRulesPool worker or the request thread. Everything in a job is plain JSON: the form's definition, what the
 * page sent, the saved draft. No token, no EHR client: the rules are pure.
 */

/** Judge a submitted response as a save does; with `complete`, also the completion checks (required items). */
export interface ReviseJob {
  op: 'revise';
  form: FormDefinition;
  submitted: unknown;
  previous: FhirResource | undefined;
  author: FormAuthor;
  meta: ResponseMeta;
  complete: boolean;
}

/** Merge a fresh prefill into a saved response (resume, an adaptive step): clinicians' answers never change. */
interface MergeJob {
  op: 'merge';
  form: FormDefinition;
  saved: FhirResource;
}

export type FormRulesJob = ReviseJob | MergeJob;

/** A judged response: the shaped QuestionnaireResponse, or every problem that refuses it (nothing stored). */
export type Revised = { ok: true; response: FhirResource } | { ok: false; problems: FormProblem[] };
export type Merged = ReturnType<typeof mergeResume>;

export interface FormRulesResults {
  revise: Revised;
  merge: Merged;
}

/** Runs one job (in a worker or in the request thread: the same code either way). */
export function evaluateFormRules(job: FormRulesJob): Revised | Merged {
  if (job.op === 'merge') return mergeResume(job.form, job.saved);
  const result = reviseResponse(job.form, job.submitted, job.previous, job.author, job.meta);
  if (!result.ok) return result;
  if (job.complete) {
    const problems = completionProblems(job.form, result.response);
    if (problems.length > 0) return { ok: false, problems };
  }
  return { ok: true, response: result.response };
}
