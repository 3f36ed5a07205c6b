import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { DtrVersion, FhirResource, PackageIssue } from '@dtr/fhir';

/** Who reports: this software's name and version (package.json), found upward from this file in src and dist. */
function readSoftware(): { name: string; version: string } {
  let dir = import.meta.dirname;
  for (let i = 0; i < 8; i++) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
      if (typeof pkg.name === 'string' && typeof pkg.version === 'string' && !pkg.name.startsWith('@dtr/'))
        return { name: pkg.name, version: pkg.version };
    }
    dir = path.dirname(dir);
  }
  return { name: 'dtr-backend', version: 'unknown' };
}

const SOFTWARE = readSoftware();

/**
 * Our issue codes as FHIR IssueType codes (the code system the DTR metric `failure` is bound to, required), so the
 * payer reads a standard code; ours travels beside it in `details.coding`.
 * @see https://hl7.org/fhir/R4/valueset-issue-type.html
 * @see https://hl7.org/fhir/us/davinci-dtr/2.2.0/en/StructureDefinition-DTRMetricData.html (questionnaire.failure)
 */
const ISSUE_TYPE: Partial<Record<PackageIssue['code'], string>> = {
  'no-questionnaire': 'not-found',
  'missing-library': 'not-found',
  'missing-cqf-library': 'not-found',
  'missing-include': 'not-found',
  'unknown-library': 'not-found',
  'unknown-define': 'not-found',
  'library-unresolved': 'not-found',
  'library-not-declared': 'not-found',
  'valueset-not-in-package': 'not-found',
  'valueset-expand-failed': 'not-found',
  'valueset-not-expanded': 'incomplete',
  'cql-only': 'not-supported',
  'unsupported-model-version': 'not-supported',
  'cql-compile-failed': 'invalid',
  'unreadable-elm': 'invalid',
  'unreadable-inline-elm': 'invalid',
  'bad-expression': 'invalid',
  'library-without-content': 'invalid',
  'library-without-elm': 'invalid',
  'misspelled-extension-url': 'invalid',
  'version-mismatch': 'invalid',
  'define-failed': 'exception',
  'expression-failed': 'exception',
  'answer-type-mismatch': 'invalid',
  'calculation-cycle': 'processing',
  'enablewhen-cycle': 'processing',
  'questionnaire-expired': 'business-rule',
};

/**
 * Prefill issues that are a fault of the questionnaire's logic met at run time (CQL or FHIRPath that failed while
 * evaluating), which the payer is told about. Their messages may quote the engine's error, which may quote patient
 * data: only the code and the content names (library, define, item) are sent, never the message.
 */
export const RUNTIME_REPORTED = new Set<PackageIssue['code']>([
  'define-failed',
  'expression-failed',
  'unknown-define',
  'library-unresolved',
  'bad-expression',
  'answer-type-mismatch',
]);

/** A text made of content facts only: what failed, in which library, define and item. */
function safeText(issue: PackageIssue): string {
  if (!RUNTIME_REPORTED.has(issue.code)) return issue.message.slice(0, 500);
  const where = [
    issue.library ? `library ${issue.library}` : '',
    issue.define ? `define "${issue.define}"` : '',
    issue.linkId ? `item ${issue.linkId}` : '',
  ].filter(Boolean);
  return `${issue.code} during prefill${where.length ? ` (${where.join(', ')})` : ''}`;
}

/**
 * The OperationOutcome of a report: one issue per problem (IssueType code, our code, a PHI-free text, the item
 * when known) and a closing `informational` issue naming our software, its version, the time with its offset and
 * the provider endpoint when known (what the IG says the outcome SHOULD carry). Nothing read from the EHR is in it.
 */
function outcomeOf(issues: PackageIssue[], now: Date, endpoint: string | undefined): FhirResource {
  const reporter = [
    `software=${SOFTWARE.name}`,
    `version=${SOFTWARE.version}`,
    `time=${now.toISOString().replace('Z', '+00:00')}`,
    ...(endpoint ? [`endpoint=${endpoint}`] : []),
  ].join('; ');
  return {
    resourceType: 'OperationOutcome',
    issue: [
      ...issues.map((i) => ({
        severity: i.severity,
        code: ISSUE_TYPE[i.code] ?? 'processing',
        details: { coding: [{ system: 'urn:dtr-backend:issue', code: i.code }], text: safeText(i) },
        ...(i.linkId ? { expression: [`Questionnaire.item.where(linkId='${i.linkId}')`] } : {}),
      })),
      { severity: 'information', code: 'informational', diagnostics: reporter },
    ],
  };
}

/**
 * `$log-questionnaire-errors` input in the shape of the payer's DTR version. Every version defines it on the
 * Questionnaire type (`POST [base]/Questionnaire/$log-questionnaire-errors`). In 2.0.1 and 2.1 the body is the
 * DTRLogErrorsInputParameters profile: `questionnaire` (canonical, version-specific) and `operationOutcome`
 * (the OperationDefinition's own parameter names differ in case; its inputProfile, which instances conform to, is
 * followed). In 2.2 the operation takes one parameter, `resource`, a Parameters conforming to that profile.
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2/OperationDefinition-log-questionnaire-errors.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2/StructureDefinition-dtr-log-errors-input-parameters.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/OperationDefinition-log-questionnaire-errors.html
 * @see https://hl7.org/fhir/us/davinci-dtr/2.2.0/en/OperationDefinition-log-questionnaire-errors.html
 * @see https://hl7.org/fhir/us/davinci-dtr/2.2.0/en/StructureDefinition-dtr-log-errors-input-parameters.html
 */
export function logErrorsRequest(
  version: DtrVersion,
  questionnaire: string,
  issues: PackageIssue[],
  now: Date,
  endpoint?: string,
): { path: string; body: FhirResource } {
  const input: FhirResource = {
    resourceType: 'Parameters',
    parameter: [
      { name: 'questionnaire', valueCanonical: questionnaire },
      { name: 'operationOutcome', resource: outcomeOf(issues, now, endpoint) },
    ],
  };
  const body =
    version === '2.2' ? { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: input }] } : input;
  return { path: 'Questionnaire/$log-questionnaire-errors', body };
}
