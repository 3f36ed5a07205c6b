import type { DtrVersion, FhirResource, Issue, QuestionnairePackage } from '@dtr/fhir';
import type { PrefillSession } from './prefill-session.js';

// The engine's vocabulary, apart from the engine (input validation and the session use it too).

export interface PrefillRequest {
  pkg: QuestionnairePackage;
  questionnaire: FhirResource;
  patientId: string;
  /** References from the launch context (`DeviceRequest/1`, `Coverage/2`, `Encounter/3`, `Practitioner/4`). */
  order?: string;
  coverage?: string;
  encounter?: string;
  /** The signed-in user (fhirUser), recorded as author of the answers. */
  user?: string;
  igVersion: DtrVersion;
  now?: Date;
  /** Resources the caller already read (the order, the coverage): not read again. */
  known?: FhirResource[];
  /**
   * Search value sets with `code:in` (the EHR expands them) instead of listing their codes; an EHR that refuses the
   * modifier (the reader throws CodeInUnsupportedError) gets the codes listed.
   */
  codeIn?: boolean;
  /** Reads at most this many searches at once (default 4). */
  concurrency?: number;
  /**
   * Shares reads, searches and define results with the other questionnaires of the same patient and launch (see
   * `runAll`, which makes one).
   */
  session?: PrefillSession;
}

/** What the prefill engine reports: the one Issue type of `@dtr/fhir`. */
export type PrefillIssue = Issue;

/** A resource an answer may have been drawn from: its reference and security labels only. */
export interface AnswerSource {
  /** `Type/id`; `Type/*` stands for further resources of that type not listed. */
  reference: string;
  labels?: Array<{ system?: string; code?: string }>;
}

export interface PrefillResult {
  questionnaireResponse: FhirResource;
  issues: PrefillIssue[];
  /** candidateExpression: the answer options offered per item (linkId), for the form to show. */
  options: Record<string, Array<Record<string, unknown>>>;
  /** contextExpression: what to show with an item (linkId), e.g. the observations an answer came from. */
  answerContext: Record<string, unknown[]>;
  /** Per item (linkId): the resources its expression read, for the disclosure rules (sensitivity, Consent). */
  sources: Record<string, AnswerSource[]>;
  stats: {
    searches: number;
    reads: number;
    resourcesRead: number;
    definesEvaluated: number;
    ms: { resolve: number; fetch: number; evaluate: number; assemble: number; total: number };
  };
}

export const INFORMATION_ORIGIN = 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/information-origin';
