import type { FhirResource } from '@dtr/fhir';
import type { FormAuthor, FormDefinition, FormProblem, Origin, ResponseMeta } from './form.types.js';

const notBuilt = (): never => {
  throw new Error('not built');
};

/**
 * Validates a submitted QR against the form, recomputes enableWhen/enableWhenExpression and
 * calculatedExpression to a steady state, drops answers of disabled items, and sets information-origin.
 * `previous` is the last saved QR. Never trusts information-origin or status sent by the page.
 */
export function reviseResponse(
  form: FormDefinition,
  submitted: unknown,
  previous: FhirResource | undefined,
  author: FormAuthor,
  meta: ResponseMeta,
): { ok: true; response: FhirResource; dropped: string[] } | { ok: false; problems: FormProblem[] } {
  void [form, submitted, previous, author, meta];
  return notBuilt();
}

/** Problems that prevent completion: required enabled items empty (and any reviseResponse problem). */
export function completionProblems(form: FormDefinition, response: FhirResource): FormProblem[] {
  void [form, response];
  return notBuilt();
}

/** Shapes a QR to the DTR QR profile of meta/igVersion. */
export function shapeResponse(
  form: FormDefinition,
  response: FhirResource,
  meta: ResponseMeta,
  status: 'in-progress' | 'completed' | 'stopped',
): FhirResource {
  void [form, response, meta, status];
  return notBuilt();
}

/** Resume: merges a fresh prefill into a saved QR; override/manual answers never change. */
export function mergeResume(
  form: FormDefinition,
  saved: FhirResource,
): { response: FhirResource; updated: string[]; added: string[] } {
  void [form, saved];
  return notBuilt();
}

/** effectivePeriod ended (at `now`) → the QR must be stopped; returns a message for the clinician or undefined. */
export function expiredQuestionnaire(questionnaire: FhirResource, now: Date): string | undefined {
  void [questionnaire, now];
  return notBuilt();
}

/** Per item: origin and author of each answered item. */
export function answerOrigins(
  response: FhirResource,
): Array<{ linkId: string; origin: Origin | 'auto'; author?: FormAuthor }> {
  void response;
  return notBuilt();
}
