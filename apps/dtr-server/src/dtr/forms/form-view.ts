import type { FhirResource } from '@dtr/fhir';
import {
  answerOrigins,
  type FormDefinition,
  pageQuestionnaire,
  type ResponseMeta,
  type ServerOnlyRule,
} from '@dtr/forms';
import { CONFLICT_MESSAGE } from './ehr-responses.js';
import type { FormSession, FormStatus } from './form-session.repository.js';

/** One questionnaire of the session, as the list shows it. */
export interface FormSummary {
  id: string;
  questionnaire: { url: string; version?: string; title?: string };
  status: FormStatus;
  payer: { id: string; name: string };
  ehr: { id?: string; versionId?: string; savedAt?: string };
  updatedAt: string;
}

/** Everything the form page needs for one questionnaire. */
export interface FormView {
  id: string;
  status: FormStatus;
  igVersion: FormSession['igVersion'];
  /**
   * The questionnaire as the page renders it: without the payer's expressions the page could not run safely (a
   * regular expression that may backtrack without end), which the server evaluates at each save instead.
   */
  questionnaire: FhirResource;
  /** Each expression left to the server, with its item and why (libs/forms/src/browser-rules.ts). */
  serverRules: ServerOnlyRule[];
  /** The package's value sets the questionnaire's items are bound to (the page offers their codes). */
  valueSets: FhirResource[];
  response: FhirResource;
  issues: Array<{ severity: string; code: string; message: string; linkId?: string }>;
  origins: Array<{ linkId: string; origin: string; author?: unknown; sources?: string[] }>;
  options: Record<string, Array<Record<string, unknown>>>;
  ehr: { id?: string; versionId?: string; savedAt?: string; error?: string };
  conflict?: { theirs: FhirResource; ours: FhirResource; message: string };
  author: { known: boolean; display?: string };
  stoppedReason?: string;
  /** Set when this form continues a response found in the EHR: which auto answers the fresh prefill changed. */
  resumed?: { from: string; updated: string[]; added: string[] };
  /**
   * An adaptive questionnaire: the payer asks the next questions (`$next-question`) and says when it is complete;
   * `coverageInformation` is each CRD coverage-information determination the payer put on the response.
   */
  adaptive?: { coverageInformation: Array<Record<string, string>> };
}

const COVERAGE_INFORMATION = 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information';

/**
 * A coverage-information extension as name → text (its sub-extensions: coverage, covered, pa-needed, doc-needed,
 * coverage-assertion-id, satisfied-pa-id, date, …; codings and references as their code or reference).
 * @see https://hl7.org/fhir/us/davinci-crd/StructureDefinition-ext-coverage-information.html
 */
function determinationOf(extension: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  const parts = Array.isArray(extension['extension']) ? (extension['extension'] as Array<Record<string, unknown>>) : [];
  for (const part of parts) {
    const name = typeof part['url'] === 'string' ? part['url'] : undefined;
    const [key, value] = Object.entries(part).find(([k]) => k.startsWith('value')) ?? [];
    if (!name || !key) continue;
    const text =
      typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean'
        ? String(value)
        : ((value as { reference?: string; coding?: Array<{ code?: string; display?: string }> }).reference ??
          (value as { coding?: Array<{ code?: string; display?: string }> }).coding
            ?.map((c) => c.display ?? c.code)
            .join(', '));
    if (text) out[name] = out[name] ? `${out[name]}; ${text}` : text;
  }
  return out;
}

export function summaryOf(form: Omit<FormSession, 'definition' | 'prefill' | 'draft' | 'conflict'>): FormSummary {
  return {
    id: form.id,
    questionnaire: form.questionnaire,
    status: form.status,
    payer: form.payer,
    ehr: ehrOf(form, false),
    updatedAt: form.updatedAt.toISOString(),
  };
}

function ehrOf(form: Pick<FormSession, 'ehr'>, withError: boolean): FormView['ehr'] {
  return {
    ...(form.ehr.id ? { id: form.ehr.id } : {}),
    ...(form.ehr.versionId ? { versionId: form.ehr.versionId } : {}),
    ...(form.ehr.savedAt ? { savedAt: form.ehr.savedAt.toISOString() } : {}),
    ...(withError && form.ehr.error ? { error: form.ehr.error } : {}),
  };
}

/** `Type/id` of a resource shown with an item (contextExpression results), for "where did this come from". */
function sourcesOf(resources: unknown[] | undefined): string[] | undefined {
  const refs = (resources ?? [])
    .map((r) => r as { resourceType?: unknown; id?: unknown })
    .filter((r) => typeof r?.resourceType === 'string' && typeof r.id === 'string')
    .map((r) => `${String(r.resourceType)}/${String(r.id)}`);
  return refs.length > 0 ? [...new Set(refs)] : undefined;
}

export function viewOf(form: FormSession): FormView {
  const response = form.draft ?? form.prefill;
  const { definition } = form;
  const page = pageQuestionnaire(definition.questionnaire);
  return {
    id: form.id,
    status: form.status,
    igVersion: form.igVersion,
    questionnaire: page.questionnaire,
    serverRules: page.serverOnly,
    valueSets: definition.valueSets,
    response,
    issues: definition.issues,
    origins: answerOrigins(response).map((o) => {
      const sources = sourcesOf(definition.answerContext[o.linkId]);
      return { ...o, ...(sources ? { sources } : {}) };
    }),
    options: definition.options,
    ehr: ehrOf(form, true),
    ...(form.conflict && form.draft
      ? { conflict: { theirs: form.conflict, ours: form.draft, message: CONFLICT_MESSAGE } }
      : {}),
    author: {
      known: Boolean(definition.author.practitioner),
      ...(definition.author.display ? { display: definition.author.display } : {}),
    },
    ...(form.stoppedReason ? { stoppedReason: form.stoppedReason } : {}),
    ...(definition.resumed ? { resumed: definition.resumed } : {}),
    ...(definition.adaptive
      ? {
          adaptive: {
            coverageInformation: definition.adaptive.extensions
              .filter((e) => e['url'] === COVERAGE_INFORMATION)
              .map(determinationOf),
          },
        }
      : {}),
  };
}

/** The pure rules' view of a stored form. */
export function definitionOf(form: Pick<FormSession, 'definition' | 'igVersion' | 'prefill'>): FormDefinition {
  return {
    questionnaire: form.definition.questionnaire,
    valueSets: form.definition.valueSets,
    igVersion: form.igVersion,
    prefill: form.prefill,
    ...(form.definition.context ? { context: form.definition.context } : {}),
  };
}

/** The DTR QR profile fields of a form's response, authored now. */
export function metaOf(
  form: Pick<FormSession, 'definition' | 'patient' | 'questionnaire' | 'ehr'>,
  now: Date,
): ResponseMeta {
  const { definition } = form;
  return {
    ...(form.ehr.id ? { id: form.ehr.id } : {}),
    subject: `Patient/${form.patient}`,
    ...(definition.author.practitioner ? { author: definition.author } : {}),
    authored: now.toISOString(),
    orders: definition.orders,
    ...(definition.coverage.length > 0 ? { coverage: definition.coverage } : {}),
    ...(definition.encounter ? { encounter: definition.encounter } : {}),
    questionnaireCanonical: `${form.questionnaire.url}${form.questionnaire.version ? `|${form.questionnaire.version}` : ''}`,
    ...(definition.adaptive
      ? { adaptive: { questionnaire: definition.questionnaire, extensions: definition.adaptive.extensions } }
      : {}),
  };
}
