import type { Submission } from '@dtr/disclosure';

/** A submission as the clinician and the API see it: states and outcomes, never the bytes or the id map. */
export interface SubmissionView {
  id: string;
  formId: string;
  state: Submission['state'];
  payer: { id: string };
  route: string;
  questionnaire: string;
  createdAt: string;
  updatedAt: string;
  attempts: number;
  ehrCopy?: { documentReference: string; provenance?: string; sha256: string };
  payerOutcome?: string;
  payerAnswer?: unknown;
  error?: string;
  choices: Record<string, string>;
}

export function submissionView(s: Submission, withAnswer = false): SubmissionView {
  return {
    id: s.id,
    formId: s.formId,
    state: s.state,
    payer: { id: s.payerId },
    route: s.route,
    questionnaire: s.questionnaireUrl,
    createdAt: s.createdAt.toISOString(),
    updatedAt: s.updatedAt.toISOString(),
    attempts: s.attempts,
    ...(s.documentReference
      ? {
          ehrCopy: {
            documentReference: s.documentReference,
            ...(s.provenance ? { provenance: s.provenance } : {}),
            sha256: s.sha256,
          },
        }
      : {}),
    ...(s.payerOutcome ? { payerOutcome: s.payerOutcome } : {}),
    ...(withAnswer && s.payerAnswer !== undefined ? { payerAnswer: s.payerAnswer } : {}),
    ...(s.lastError ? { error: s.lastError } : {}),
    choices: s.choices,
  };
}
