/**
 * The Da Vinci DTR IG versions we speak, oldest first. Each differs in the shapes of $questionnaire-package,
 * $next-question and the QuestionnaireResponse profile; every version-dependent rule switches on this type.
 * @see https://hl7.org/fhir/us/davinci-dtr/history.html
 */
export const DTR_VERSIONS = ['2.0.1', '2.1', '2.2'] as const;
export type DtrVersion = (typeof DTR_VERSIONS)[number];

export const isDtrVersion = (value: unknown): value is DtrVersion =>
  typeof value === 'string' && (DTR_VERSIONS as readonly string[]).includes(value);
