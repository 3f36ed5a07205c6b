import {
  type FhirResource,
  type Parameters,
  type ParametersParameter,
  PayerHttpError,
  isResource,
} from './fhir.types.js';
import type { DtrIgVersion } from './questionnaire-package.usecase.js';

/** FHIR R4 IssueType codes: the only codes an issue of the reported OperationOutcome may carry. */
const ISSUE_TYPES = new Set(
  (
    'invalid structure required value invariant security login unknown expired forbidden suppressed processing ' +
    'not-supported duplicate multiple-matches not-found deleted too-long code-invalid extension too-costly ' +
    'business-rule conflict transient lock-expired no-store exception timeout incomplete throttled informational'
  ).split(' '),
);
const SEVERITIES = new Set(['fatal', 'error', 'warning', 'information']);

export interface LoggedErrors {
  version: DtrIgVersion;
  questionnaire: string;
  outcome: FhirResource;
}

const refuse = (message: string): never => {
  throw new PayerHttpError(400, 'invalid', message);
};

/** The DTRLogErrorsInputParameters profile: `questionnaire` (canonical) and `operationOutcome`, nothing else. */
function readProfileInstance(body: unknown, version: DtrIgVersion): Omit<LoggedErrors, 'version'> {
  if (!isResource(body) || body.resourceType !== 'Parameters') refuse('the input must be a Parameters resource');
  const params = ((body as Parameters).parameter ?? []) as ParametersParameter[];
  const unknown = params.filter((p) => p.name !== 'questionnaire' && p.name !== 'operationOutcome');
  if (unknown.length > 0)
    refuse(`DTR ${version} $log-questionnaire-errors has no parameter ${unknown.map((p) => p.name).join(', ')}`);
  const questionnaires = params.filter((p) => p.name === 'questionnaire');
  const outcomes = params.filter((p) => p.name === 'operationOutcome');
  if (questionnaires.length !== 1 || typeof questionnaires[0]!.valueCanonical !== 'string')
    refuse('questionnaire must be given once, as valueCanonical');
  if (outcomes.length !== 1 || outcomes[0]!.resource?.resourceType !== 'OperationOutcome')
    refuse('operationOutcome must be given once, carrying an OperationOutcome');
  const outcome = outcomes[0]!.resource!;
  const issues = outcome['issue'];
  if (!Array.isArray(issues) || issues.length === 0) refuse('the OperationOutcome has no issue');
  for (const issue of issues as Array<{ severity?: unknown; code?: unknown }>) {
    if (typeof issue.severity !== 'string' || !SEVERITIES.has(issue.severity))
      refuse(`issue.severity ${String(issue.severity)} is not an IssueSeverity code`);
    if (typeof issue.code !== 'string' || !ISSUE_TYPES.has(issue.code))
      refuse(`issue.code ${String(issue.code)} is not an IssueType code`);
  }
  return { questionnaire: questionnaires[0]!.valueCanonical!, outcome };
}

/**
 * `Questionnaire/$log-questionnaire-errors` input, checked strictly in the shape of each DTR version: 2.0.1 and 2.1
 * take the DTRLogErrorsInputParameters instance as the body; 2.2 takes one parameter `resource` carrying it.
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2/OperationDefinition-log-questionnaire-errors.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/OperationDefinition-log-questionnaire-errors.html
 * @see https://hl7.org/fhir/us/davinci-dtr/2.2.0/en/OperationDefinition-log-questionnaire-errors.html
 */
export function readLogErrorsInput(body: unknown, version: DtrIgVersion): LoggedErrors {
  if (version !== '2.2') return { version, ...readProfileInstance(body, version) };
  if (!isResource(body) || body.resourceType !== 'Parameters') refuse('the body must be a Parameters resource');
  const params = ((body as Parameters).parameter ?? []) as ParametersParameter[];
  if (params.length !== 1 || params[0]!.name !== 'resource' || !params[0]!.resource)
    refuse('DTR 2.2 $log-questionnaire-errors takes exactly one parameter, resource (a Parameters)');
  return { version, ...readProfileInstance(params[0]!.resource, version) };
}
