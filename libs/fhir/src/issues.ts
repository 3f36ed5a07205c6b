/**
 * One issue type for everything that reads a payer's content or a patient's data: the package validator, the prefill
 * engine and the form. Codes are stable (tests, logs and `$log-questionnaire-errors` use them); a situation has one
 * code wherever it is seen.
 */
type IssueCode =
  // the package as a whole
  | 'no-questionnaire'
  | 'misspelled-extension-url'
  | 'missing-library'
  | 'missing-cqf-library'
  | 'missing-include'
  | 'cql-only'
  | 'compiled-from-cql'
  | 'elm-compiled-from-cql'
  | 'cql-compile-failed'
  | 'library-without-content'
  | 'unreadable-elm'
  | 'unsupported-model-version'
  | 'version-mismatch'
  | 'valueset-not-in-package'
  | 'valueset-expand-failed'
  | 'valueset-not-expanded'
  // one item's expression
  | 'bad-expression'
  | 'unreadable-inline-elm'
  | 'unknown-library'
  | 'library-not-declared'
  | 'library-without-elm'
  | 'unknown-define'
  | 'expression-not-evaluated'
  | 'expression-failed'
  | 'launch-context-missing'
  | 'library-unresolved'
  | 'define-failed'
  | 'answer-type-mismatch'
  | 'calculation-cycle'
  | 'enablewhen-cycle'
  // the patient's data
  | 'no-patient'
  | 'not-found'
  | 'read-failed'
  | 'search-failed'
  | 'not-patient-compartment'
  | 'not-patient-data'
  | 'not-searchable-by-patient'
  | 'code-in-unsupported'
  | 'invalid-resource'
  | 'resource-without-id'
  | 'duplicate-id'
  // forms
  | 'resume-search-failed'
  | 'resume-failed'
  | 'questionnaire-expired';

export interface Issue {
  severity: 'error' | 'warning' | 'information';
  code: IssueCode;
  message: string;
  questionnaire?: string;
  linkId?: string;
  library?: string;
  define?: string;
  valueSet?: string;
}
