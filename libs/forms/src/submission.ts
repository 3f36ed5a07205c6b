import type { FormProblem } from './form.types.js';
import { type AnswerSets, checkAnswer } from './answer-check.js';
import type { Answer, ItemDefinition, QuestionnaireIndex, ResponseNode } from './questionnaire-items.js';

/**
 * Reads what the page sent as a QuestionnaireResponse into a clean response tree, refusing anything that is not
 * plainly JSON of the right shape (a non-object, `__proto__`/`constructor`/`prototype` keys, NUL characters, nesting
 * or sizes beyond limits), items this questionnaire does not have at that place, and answers its items do not take.
 * Only `linkId`, `text`, `answer` (value[x] and nested `item`) and `item` are kept: the page's information-origin,
 * status and other fields are never trusted.
 */

const LIMITS = { depth: 24, items: 5_000, answersPerItem: 500, stringChars: 1_000_000 } as const;
/** A save refused for thousands of reasons says the first hundred. */
const MAX_PROBLEMS = 100;

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** Finds forbidden keys, NUL characters and over-long strings anywhere, without recursion beyond `depth`. */
function screen(value: unknown, depth: number): string | undefined {
  if (depth > LIMITS.depth * 3) return 'the response is nested too deeply';
  if (typeof value === 'string') {
    if (value.includes('\u0000')) return 'the response contains a NUL character';
    if (value.length > LIMITS.stringChars) return 'the response contains a value that is too long';
    return undefined;
  }
  if (Array.isArray(value)) {
    for (const v of value) {
      const found = screen(v, depth + 1);
      if (found) return found;
    }
    return undefined;
  }
  if (value && typeof value === 'object') {
    for (const key of Object.keys(value)) {
      if (FORBIDDEN_KEYS.has(key) || key.includes('\u0000')) return 'the response contains a key that is not allowed';
      const found = screen((value as Record<string, unknown>)[key], depth + 1);
      if (found) return found;
    }
  }
  return undefined;
}

interface Submission {
  items: ResponseNode[];
  problems: FormProblem[];
}

export function readSubmission(
  submitted: unknown,
  index: QuestionnaireIndex,
  sets: AnswerSets,
  canonical: { url?: string; version?: string },
): Submission {
  const whole = (code: FormProblem['code'], message: string): Submission => ({
    items: [],
    problems: [{ linkId: '', code, message }],
  });
  if (!isObject(submitted)) return whole('invalid-value', 'the response is not a QuestionnaireResponse');
  // JSON.parse makes `__proto__` an own key; Object.keys sees it.
  const screened = screen(submitted, 0);
  if (screened) return whole('invalid-value', screened);
  if (submitted['resourceType'] !== 'QuestionnaireResponse')
    return whole('invalid-value', 'the response is not a QuestionnaireResponse');
  // An adaptive response names its contained Questionnaire (`#id`): that one's canonical is what it answers.
  const questionnaire = containedCanonical(submitted) ?? submitted['questionnaire'];
  if (questionnaire !== undefined) {
    const [url, version] = typeof questionnaire === 'string' ? questionnaire.split('|') : [];
    if (
      typeof questionnaire !== 'string' ||
      (canonical.url !== undefined && url !== canonical.url) ||
      (version !== undefined && canonical.version !== undefined && version !== canonical.version)
    )
      return whole('other-questionnaire', 'the response answers another questionnaire than this one');
  }
  const reader: Reader = { index, sets, problems: [], count: 0 };
  const items = readItems(reader, submitted['item'], index.roots, 0);
  return { items, problems: reader.problems.slice(0, MAX_PROBLEMS) };
}

function containedCanonical(submitted: Record<string, unknown>): string | undefined {
  const ref = submitted['questionnaire'];
  if (typeof ref !== 'string' || !ref.startsWith('#') || !Array.isArray(submitted['contained'])) return undefined;
  const found = (submitted['contained'] as unknown[]).find(
    (r): r is Record<string, unknown> =>
      isObject(r) && r['resourceType'] === 'Questionnaire' && r['id'] === ref.slice(1),
  );
  const url = found?.['url'];
  if (typeof url !== 'string') return undefined;
  return typeof found?.['version'] === 'string' ? `${url}|${found['version']}` : url;
}

/** What reading one submission keeps track of. */
interface Reader {
  index: QuestionnaireIndex;
  sets: AnswerSets;
  problems: FormProblem[];
  /** Items read so far (against LIMITS.items). */
  count: number;
}

const labelOf = (d: ItemDefinition): string => (d.text ? `"${d.text.slice(0, 120)}"` : `item ${d.linkId}`);

/** A list of items, each of which must be one of `allowed` (the children of the enclosing item, or the roots). */
function readItems(reader: Reader, raw: unknown, allowed: ItemDefinition[] | undefined, depth: number): ResponseNode[] {
  const { problems } = reader;
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    problems.push({ linkId: '', code: 'invalid-value', message: 'the response items are not a list' });
    return [];
  }
  if (depth > LIMITS.depth) {
    problems.push({ linkId: '', code: 'invalid-value', message: 'the response is nested too deeply' });
    return [];
  }
  const out: ResponseNode[] = [];
  const seen = new Map<string, number>();
  for (const entry of raw) {
    if (++reader.count > LIMITS.items) {
      problems.push({ linkId: '', code: 'invalid-value', message: 'the response has too many items' });
      return out;
    }
    if (!isObject(entry) || typeof entry['linkId'] !== 'string' || entry['linkId'] === '') {
      problems.push({ linkId: '', code: 'invalid-value', message: 'an item of the response has no linkId' });
      continue;
    }
    const linkId = entry['linkId'];
    const definition = (allowed ?? []).find((d) => d.linkId === linkId);
    if (!definition) {
      const shown = linkId.slice(0, 200);
      problems.push({
        linkId: shown,
        code: 'unknown-item',
        message: reader.index.byLinkId.has(linkId)
          ? `item ${shown} is not in this place of the questionnaire`
          : `item ${shown} is not part of this questionnaire`,
      });
      continue;
    }
    seen.set(linkId, (seen.get(linkId) ?? 0) + 1);
    if (seen.get(linkId) === 2 && !definition.repeats)
      problems.push({ linkId, code: 'not-repeating', message: `${labelOf(definition)}: this item is not repeatable` });
    if (definition.type !== 'display') out.push(readItem(reader, entry, definition, depth));
  }
  return out;
}

/** One item: its children and its answers, each answer checked against the item's definition. */
function readItem(
  reader: Reader,
  entry: Record<string, unknown>,
  definition: ItemDefinition,
  depth: number,
): ResponseNode {
  const { problems } = reader;
  const node: ResponseNode = { linkId: definition.linkId };
  if (typeof definition.text === 'string') node.text = definition.text;
  const children = readItems(reader, entry['item'], definition.item, depth + 1);
  if (children.length > 0) node.item = children;
  const rawAnswers = entry['answer'];
  if (rawAnswers === undefined) return node;
  if (!Array.isArray(rawAnswers) || rawAnswers.length > LIMITS.answersPerItem) {
    problems.push({
      linkId: definition.linkId,
      code: 'invalid-value',
      message: `${labelOf(definition)}: the answers are not a list`,
    });
    return node;
  }
  if (rawAnswers.length > 1 && !definition.repeats)
    problems.push({
      linkId: definition.linkId,
      code: 'not-repeating',
      message: `${labelOf(definition)}: only one answer is allowed`,
    });
  const answers: Answer[] = [];
  for (const raw of rawAnswers) {
    if (!isObject(raw)) {
      problems.push({
        linkId: definition.linkId,
        code: 'wrong-type',
        message: `${labelOf(definition)}: an answer is not valid`,
      });
      continue;
    }
    const nested = readItems(reader, raw['item'], definition.item, depth + 1);
    const candidate: Answer = Object.fromEntries(Object.entries(raw).filter(([k]) => k.startsWith('value')));
    if (nested.length > 0) candidate.item = nested;
    const checked = checkAnswer(definition, candidate, reader.sets);
    if ('problem' in checked) problems.push(checked.problem);
    else answers.push(checked.answer);
  }
  if (answers.length > 0) node.answer = answers;
  return node;
}
