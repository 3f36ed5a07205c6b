import type { FhirResource } from '@dtr/fhir';
import {
  answerReferences,
  type AnswerSource,
  type Choice,
  type ConsentRestriction,
  sourceReasons,
} from '@dtr/disclosure';
import { DtrError } from '@dtr/kernel';

/** One answer as the clinician reviews it before sending. */
export interface ReviewedAnswer {
  key: string;
  linkId: string;
  text: string;
  value: string;
  reasons: string[];
}

/** One resource the payer-bound Bundle would carry (an answer references it). */
export interface ReviewedResource {
  key: string;
  reference: string;
  reasons: string[];
}

export interface Flags {
  answers: ReviewedAnswer[];
  resources: ReviewedResource[];
  /** Keys of everything that needs an explicit include/withhold choice. */
  needsChoice: string[];
}

interface QItem {
  linkId?: string;
  text?: string;
  item?: QItem[];
  answer?: Array<Record<string, unknown> & { item?: QItem[] }>;
}

/** A short text of one answer value, for the review page. */
function display(answer: Record<string, unknown>): string {
  for (const [key, value] of Object.entries(answer)) {
    if (!key.startsWith('value')) continue;
    if (value && typeof value === 'object') {
      const v = value as { display?: string; code?: string; reference?: string; value?: number; unit?: string };
      return v.display ?? v.code ?? v.reference ?? (v.value !== undefined ? `${v.value} ${v.unit ?? ''}`.trim() : '');
    }
    return String(value);
  }
  return '';
}

function textsOf(questionnaire: FhirResource): Map<string, string> {
  const texts = new Map<string, string>();
  const visit = (items: QItem[] | undefined) => {
    for (const item of items ?? []) {
      if (item.linkId) texts.set(item.linkId, item.text ?? item.linkId);
      visit(item.item);
    }
  };
  visit((questionnaire as { item?: QItem[] }).item);
  return texts;
}

/**
 * What needs the clinician's choice: each answered item one of whose sources is sensitive (labelled, or covered by a
 * Consent restricting this payer), each answer that references a sensitive resource, and each labelled resource the
 * Bundle would carry. With the Consents unknown (the EHR could not be asked), every answer drawn from the record is
 * flagged: conservative on purpose.
 */
export function flagsOf(
  questionnaire: FhirResource,
  qr: FhirResource,
  sources: Record<string, AnswerSource[]>,
  referenced: FhirResource[],
  restriction: ConsentRestriction | undefined,
): Flags {
  const texts = textsOf(questionnaire);
  const unknownConsent: ConsentRestriction = {
    all: true,
    references: new Set(),
    types: new Set(),
    labels: new Set(),
    consents: [],
  };
  const rules = restriction ?? unknownConsent;
  const resourceReasons = new Map<string, string[]>();
  for (const r of referenced) {
    const reference = `${r.resourceType}/${r.id ?? ''}`;
    const reasons = [
      ...sourceReasons({ reference, labels: r.meta?.security ?? [] }, rules),
      ...(restriction ? [] : ['the EHR could not be asked about Consents']),
    ];
    resourceReasons.set(reference, [...new Set(reasons)]);
  }
  const answers: ReviewedAnswer[] = [];
  const visit = (items: QItem[] | undefined) => {
    for (const item of items ?? []) {
      if (item.linkId && item.answer && item.answer.length > 0) {
        const fromSources = (sources[item.linkId] ?? []).flatMap((s) =>
          sourceReasons(s, rules).map(
            (reason) => `${s.reference.endsWith('/*') ? s.reference.split('/')[0] : 'a source'} ${reason}`,
          ),
        );
        const viaReference = answerReferences({ resourceType: 'QuestionnaireResponse', item: [item] }).flatMap((ref) =>
          (resourceReasons.get(ref) ?? []).length > 0 ? [`it names ${ref.split('/')[0]}, which is sensitive`] : [],
        );
        const unknown =
          !restriction && (sources[item.linkId] ?? []).length > 0 ? ['the EHR could not be asked about Consents'] : [];
        answers.push({
          key: `item:${item.linkId}`,
          linkId: item.linkId,
          text: texts.get(item.linkId) ?? item.linkId,
          value: item.answer.map(display).join(', '),
          reasons: [...new Set([...fromSources, ...viaReference, ...unknown])],
        });
      }
      visit(item.item);
      for (const a of item.answer ?? []) visit(a.item);
    }
  };
  visit((qr as { item?: QItem[] }).item);
  const resources = [...resourceReasons].map(([reference, reasons]) => ({
    key: `resource:${reference}`,
    reference,
    reasons,
  }));
  return {
    answers,
    resources,
    needsChoice: [...answers, ...resources].filter((x) => x.reasons.length > 0).map((x) => x.key),
  };
}

/** Every flagged key needs a choice; nothing else may be chosen. A clear 422 names what is missing or unknown. */
export function readChoices(body: unknown, needsChoice: string[]): Record<string, Choice> {
  const raw = (body as { choices?: unknown } | null | undefined)?.choices ?? {};
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new DtrError(
      'INVALID_INPUT',
      'choices must be an object of "item:<linkId>" or "resource:<Type/id>" to include or withhold',
    );
  const choices: Record<string, Choice> = {};
  const unknown: string[] = [];
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (!needsChoice.includes(key)) unknown.push(key);
    else if (value === 'include' || value === 'withhold') choices[key] = value;
    else throw new DtrError('INVALID_INPUT', `the choice for ${key.slice(0, 80)} must be include or withhold`);
  }
  if (unknown.length > 0)
    throw new DtrError(
      'INVALID_INPUT',
      `no choice is asked for ${unknown
        .slice(0, 5)
        .map((k) => k.slice(0, 80))
        .join(', ')}`,
    );
  const missing = needsChoice.filter((k) => !(k in choices));
  if (missing.length > 0)
    throw new DtrError(
      'INVALID_INPUT',
      `each sensitive answer and resource needs include or withhold: ${missing.join(', ')}`,
      {
        details: { missing: missing.length },
        expression: missing,
      },
    );
  return choices;
}

/** The linkIds to leave out: withheld answers, and answers naming a withheld resource. */
export function withheldItems(qr: FhirResource, choices: Record<string, Choice>): Set<string> {
  const withheld = new Set<string>();
  const resources = new Set(
    Object.entries(choices)
      .filter(([k, v]) => k.startsWith('resource:') && v === 'withhold')
      .map(([k]) => k.slice('resource:'.length)),
  );
  for (const [key, value] of Object.entries(choices))
    if (key.startsWith('item:') && value === 'withhold') withheld.add(key.slice('item:'.length));
  const visit = (items: QItem[] | undefined) => {
    for (const item of items ?? []) {
      const refs = answerReferences({ resourceType: 'QuestionnaireResponse', item: [item] });
      if (item.linkId && item.answer && refs.some((r) => resources.has(r))) withheld.add(item.linkId);
      visit(item.item);
    }
  };
  visit((qr as { item?: QItem[] }).item);
  return withheld;
}
