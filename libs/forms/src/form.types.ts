import type { DtrVersion, FhirResource } from '@dtr/fhir';

/**
 * Where an answer came from, as DTR's information-origin extension records it. 2.0.1 and 2.1 know one
 * automatic code (`auto`); 2.2 tells the client's CQL (`auto-client`) from the payer's (`auto-server`).
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/StructureDefinition-information-origin.html
 */
export type Origin = 'auto-client' | 'auto-server' | 'override' | 'manual';

/** Who gave an override or manual answer; references are `Practitioner/x` and `PractitionerRole/y`. */
export interface FormAuthor {
  practitioner?: string;
  practitionerRole?: string;
  display?: string;
  /** The practitioner's role as a code (information-origin `author.role`, a CodeableConcept in every version). */
  role?: { system?: string; code: string; display?: string };
}

/** One reason a submitted answer was refused; `message` is safe to show (no PHI beyond the item itself). */
export interface FormProblem {
  linkId: string;
  code: FormProblemCode;
  message: string;
}

type FormProblemCode =
  | 'unknown-item'
  | 'wrong-type'
  | 'not-in-answer-set'
  | 'too-long'
  | 'not-repeating'
  | 'read-only-changed'
  | 'calculated-changed'
  | 'required-missing'
  | 'other-questionnaire'
  | 'invalid-value';

export type FormIgVersion = DtrVersion;

/** Everything the rules need to judge a response: the form, its value sets, the payer's IG version, the prefill. */
export interface FormDefinition {
  /** The Questionnaire. */
  questionnaire: FhirResource;
  /** The package's expanded ValueSets (answerValueSet membership). */
  valueSets: FhirResource[];
  igVersion: FormIgVersion;
  /** The prefill as computed by the engine: a QuestionnaireResponse whose answers are tagged auto-client/auto-server. */
  prefill: FhirResource;
  /** What FHIRPath enableWhenExpression/calculatedExpression may read (launch contexts: %patient etc.). */
  context?: Record<string, unknown>;
  /**
   * candidateExpression results of the prefill (linkId → answers offered): the answer set of a choice item that has
   * neither answerOption nor answerValueSet.
   */
  options?: Record<string, Array<Record<string, unknown>>>;
}

/** The DTR QuestionnaireResponse profile's fields that come from the session rather than from the page. */
export interface ResponseMeta {
  id?: string;
  subject: string;
  author?: FormAuthor;
  /** An instant. */
  authored: string;
  orders: string[];
  coverage?: string[];
  encounter?: string;
  /** `url|version` */
  questionnaireCanonical: string;
  /**
   * An adaptive questionnaire: the Questionnaire so far, contained in the response and referenced as `#id`, and the
   * root extensions the payer's `$next-question` answer carried (CRD coverage-information), kept on the response.
   * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#adaptive-form-considerations
   */
  adaptive?: { questionnaire: FhirResource; extensions?: Array<Record<string, unknown>> };
  /** intendedUse code from CRD's coverage-information codes (`withorder` when absent). */
  intendedUse?: 'withpa' | 'withclaim' | 'withorder' | 'retain-doc' | 'OTH';
}
