import type { FhirResource } from '@dtr/fhir';
import type { AnswerSets } from './answer-check.js';
import type { FormAuthor, FormDefinition, FormProblem, Origin, ResponseMeta } from './form.types.js';
import { isAutomatic, originExtension, readOrigin, type StoredOrigin, withOrigin } from './information-origin.js';
import {
  type Answer,
  calculatedExpressionOf,
  cloneTree,
  type ItemDefinition,
  indexQuestionnaire,
  initialValues,
  instancesByPath,
  isHidden,
  linkIdOfPath,
  type QuestionnaireIndex,
  type ResponseNode,
  sameValues,
  setAnswersAt,
  tidy,
  valueKey,
} from './questionnaire-items.js';
import { pruneDisabled, recompute } from './recompute.js';
import { normaliseOrigins, shapeResponse } from './response-shape.js';
import { readSubmission } from './submission.js';

/**
 * The server-side rules of a DTR form: what a save may contain, what the server recomputes, where each answer came
 * from, when the form may be completed, and how a resumed form takes a fresh prefill. Pure: no I/O, no clock (the
 * caller passes `now` and `authored`).
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#separating-user-provided-information-from-cql-retrieved-information (spec-137)
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#populating-resumed-questionnairesresponses (spec-71..73)
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#questionnaireresponse-validation (spec-142..145)
 */

const itemsOf = (resource: FhirResource | undefined): ResponseNode[] =>
  resource && Array.isArray(resource['item']) ? (resource['item'] as ResponseNode[]) : [];

function canonicalOf(questionnaire: FhirResource): { url?: string; version?: string } {
  return {
    ...(typeof questionnaire['url'] === 'string' ? { url: questionnaire['url'] } : {}),
    ...(typeof questionnaire['version'] === 'string' ? { version: questionnaire['version'] } : {}),
  };
}

const setsOf = (form: FormDefinition): AnswerSets => ({
  questionnaire: form.questionnaire,
  valueSets: form.valueSets,
  ...(form.options ? { options: form.options } : {}),
});

const labelOf = (d: ItemDefinition | undefined, linkId: string): string =>
  d?.text ? `"${d.text.slice(0, 120)}"` : `item ${linkId}`;

/** Server-owned items: the clinician cannot change them (readOnly, hidden); calculated ones are recomputed instead. */
const serverOwned = (d: ItemDefinition | undefined): boolean =>
  !!d && (d.readOnly === true || isHidden(d)) && calculatedExpressionOf(d) === undefined;

interface Baseline {
  /** The answers before any clinician touched them, each with its automatic origin. */
  answers: Answer[];
}

/**
 * What the form holds before the clinician answers: the prefill's answers (their own origin), and static `initial[x]`
 * / `initialSelected` values where the prefill gave nothing. Static initial values are the payer's: `auto-server`
 * in 2.2, `auto` before.
 */
function baselineOf(form: FormDefinition, index: QuestionnaireIndex): Map<string, Baseline> {
  const out = new Map<string, Baseline>();
  for (const [path, node] of instancesByPath(itemsOf(form.prefill)))
    if ((node.answer?.length ?? 0) > 0) out.set(path, { answers: node.answer! });
  for (const [path, answers] of initialValues(index))
    if (!out.has(path))
      out.set(path, {
        answers: answers.map((a) => withOrigin(a, originExtension('auto-server', form.igVersion, undefined))),
      });
  return out;
}

export function reviseResponse(
  form: FormDefinition,
  submitted: unknown,
  previous: FhirResource | undefined,
  author: FormAuthor,
  meta: ResponseMeta,
):
  | { ok: true; response: FhirResource; dropped: string[]; unverified?: string[] }
  | { ok: false; problems: FormProblem[] } {
  const revised = revise(form, submitted, previous, author, !previous);
  if (!revised.ok) return revised;
  const response = shapeResponse(
    form,
    { resourceType: 'QuestionnaireResponse', item: revised.items },
    meta,
    'in-progress',
  );
  return {
    ok: true,
    response,
    dropped: revised.dropped,
    ...(revised.unverified.length > 0 ? { unverified: revised.unverified } : {}),
  };
}

type Revised =
  | { ok: true; items: ResponseNode[]; dropped: string[]; disabled: Set<string>; unverified: string[] }
  | { ok: false; problems: FormProblem[] };

/** What the steps of a save share. */
interface Save {
  form: FormDefinition;
  index: QuestionnaireIndex;
  /** The form's own values (prefill, static initial values) by item path. */
  baseline: Map<string, Baseline>;
  /** The last saved response's items by path. */
  before: Map<string, ResponseNode>;
  /** What the page sent, by path. */
  sent: Map<string, ResponseNode>;
  /** The response being built (starts as what the page sent). */
  items: ResponseNode[];
  problems: FormProblem[];
}

/** The steps of a save; `firstResponse` adds the static initial values. */
function revise(
  form: FormDefinition,
  submitted: unknown,
  previous: FhirResource | undefined,
  author: FormAuthor,
  firstResponse: boolean,
): Revised {
  const index = indexQuestionnaire(form.questionnaire);
  // 1. Shape and answers, item by item.
  const submission = readSubmission(submitted, index, setsOf(form), canonicalOf(form.questionnaire));
  if (submission.problems.length > 0) return { ok: false, problems: submission.problems };
  const save: Save = {
    form,
    index,
    baseline: baselineOf(form, index),
    before: instancesByPath(itemsOf(previous)),
    sent: instancesByPath(submission.items),
    items: cloneTree(submission.items),
    problems: [],
  };
  // 2. Read-only and hidden items keep the form's value.
  keepServerOwned(save);
  // 3. A first response takes the static initial values.
  if (firstResponse) addInitialValues(save);
  // 4. Calculated values and enablement to a steady state.
  const result = recompute(form.questionnaire, index, form.context, save.items);
  const unverified = new Set(result.failures);
  checkCalculated(save, result.calculated, result.disabled, unverified);
  if (save.problems.length > 0) return { ok: false, problems: save.problems };
  const dropped = new Set<string>();
  pruneDisabled(submission.items, result.disabled, dropped);
  // 5. Information origin of every answer, decided here.
  const final = tidy(result.items, index);
  for (const [path, node] of instancesByPath(final)) {
    const definition = index.byLinkId.get(node.linkId)?.definition;
    const calculated = !!definition && calculatedExpressionOf(definition) !== undefined && !unverified.has(node.linkId);
    node.answer = node.answer?.map((answer) =>
      withOrigin(answer, originFor(answer, save.baseline.get(path), save.before.get(path), calculated, author, form)),
    );
  }
  return { ok: true, items: final, dropped: [...dropped], disabled: result.disabled, unverified: [...unverified] };
}

/** Read-only and hidden answers must be the form's value (or the one already saved); left out, they get it back. */
function keepServerOwned(save: Save): void {
  for (const [path, node] of save.sent) {
    const definition = save.index.byLinkId.get(node.linkId)?.definition;
    if (!serverOwned(definition) || !node.answer?.length) continue;
    if (
      sameValues(node.answer, save.baseline.get(path)?.answers) ||
      sameValues(node.answer, save.before.get(path)?.answer)
    )
      continue;
    save.problems.push({
      linkId: node.linkId,
      code: 'read-only-changed',
      message: `${labelOf(definition, node.linkId)}: this answer cannot be changed`,
    });
  }
  for (const [path, { answers }] of save.baseline) {
    if (!serverOwned(save.index.byLinkId.get(linkIdOfPath(path))?.definition)) continue;
    if (!save.sent.get(path)?.answer?.length) setAnswersAt(save.items, path, answers);
  }
}

/** The static initial values that neither the prefill nor the page answered. */
function addInitialValues(save: Save): void {
  const prefilled = instancesByPath(itemsOf(save.form.prefill));
  const current = instancesByPath(save.items);
  for (const [path, answers] of initialValues(save.index)) {
    const definition = save.index.byLinkId.get(linkIdOfPath(path))?.definition;
    if (!definition || calculatedExpressionOf(definition) !== undefined) continue;
    if (prefilled.get(path)?.answer?.length || current.get(path)?.answer?.length) continue;
    setAnswersAt(save.items, path, answers);
  }
}

/**
 * A calculated answer the page sent must be the recomputed one; the form's earlier value (a page that has not
 * recalculated yet) is replaced, any other value is refused. Where the server could not evaluate the expression, the
 * page's value stands (the item stays answerable) and is reported as unverified.
 */
function checkCalculated(
  save: Save,
  calculated: Map<string, Answer[]>,
  disabled: Set<string>,
  unverified: Set<string>,
): void {
  for (const [path, node] of save.sent) {
    const definition = save.index.byLinkId.get(node.linkId)?.definition;
    if (!definition || calculatedExpressionOf(definition) === undefined || !node.answer?.length) continue;
    if (disabled.has(node.linkId) || unverified.has(node.linkId)) continue;
    const stale =
      sameValues(node.answer, save.baseline.get(path)?.answers) ||
      sameValues(node.answer, save.before.get(path)?.answer);
    if (stale || sameValues(node.answer, calculated.get(path) ?? [])) continue;
    save.problems.push({
      linkId: node.linkId,
      code: 'calculated-changed',
      message: `${labelOf(definition, node.linkId)}: this value is calculated by the form and cannot be changed`,
    });
  }
}

/**
 * An answer unchanged since the last save keeps the origin (and author) it had; one equal to the form's value keeps
 * that automatic origin; a calculated value is the client's (`auto-client`); a changed answer is `override` where the
 * form had a value or the saved answer was automatic or an override (spec-137), else `manual`; both with the author.
 */
function originFor(
  answer: Answer,
  baseline: Baseline | undefined,
  before: ResponseNode | undefined,
  calculated: boolean,
  author: FormAuthor,
  form: FormDefinition,
): Record<string, unknown> {
  const key = valueKey(answer);
  const saved = before?.answer?.find((a) => valueKey(a) === key);
  const savedOrigin = saved ? readOrigin(saved) : undefined;
  if (savedOrigin) return originExtension(savedOrigin.origin, form.igVersion, savedOrigin.author);
  const base = baseline?.answers ?? [];
  const same = base.find((a) => valueKey(a) === key);
  if (same) return originExtension(readOrigin(same)?.origin ?? 'auto-client', form.igVersion, undefined);
  if (calculated) return originExtension('auto-client', form.igVersion, undefined);
  const wasAutomatic = (before?.answer ?? []).some((a) => {
    const origin = readOrigin(a)?.origin;
    return isAutomatic(origin) || origin === 'override';
  });
  return originExtension(base.length > 0 || wasAutomatic ? 'override' : 'manual', form.igVersion, author);
}

export function completionProblems(form: FormDefinition, response: FhirResource): FormProblem[] {
  const index = indexQuestionnaire(form.questionnaire);
  // The response is the server's own (saved or just revised): its read-only and calculated values stand as saved,
  // while every answer is checked again and enablement recomputed.
  const revised = revise(form, response, response, {}, false);
  if (!revised.ok) return revised.problems;
  const { items, disabled } = revised;
  const problems: FormProblem[] = [];
  const reported = new Set<string>();
  const hasContent = (node: ResponseNode): boolean =>
    (node.answer?.length ?? 0) > 0 || (node.item ?? []).some(hasContent);
  // An absent group counts as one empty instance: its required items are still asked for.
  const check = (definitions: ItemDefinition[] | undefined, siblings: ResponseNode[]) => {
    for (const definition of definitions ?? []) {
      if (definition.type === 'display' || disabled.has(definition.linkId) || isHidden(definition)) continue;
      const nodes = siblings.filter((n) => n.linkId === definition.linkId);
      if (definition.required === true && !nodes.some(hasContent) && !reported.has(definition.linkId)) {
        reported.add(definition.linkId);
        problems.push({
          linkId: definition.linkId,
          code: 'required-missing',
          message: `${labelOf(definition, definition.linkId)}: an answer is required`,
        });
      }
      const instances = nodes.length > 0 ? nodes : [{ linkId: definition.linkId }];
      for (const node of instances)
        check(definition.item, [...(node.item ?? []), ...(node.answer ?? []).flatMap((a) => a.item ?? [])]);
    }
  };
  check(index.roots, items);
  return problems;
}

export function mergeResume(
  form: FormDefinition,
  saved: FhirResource,
): { response: FhirResource; updated: string[]; added: string[] } {
  const index = indexQuestionnaire(form.questionnaire);
  const merge: Merge = {
    version: form.igVersion,
    index,
    initial: initialValues(index),
    updated: new Set(),
    added: new Set(),
  };
  const merged = tidy(mergeItems(merge, itemsOf(saved), itemsOf(form.prefill), ''), index);
  followCalculations(form, merge, itemsOf(saved), merged);
  const item = normaliseOrigins(tidy(merged, index), form.igVersion);
  return { response: { ...saved, item }, updated: [...merge.updated], added: [...merge.added] };
}

interface Merge {
  version: FormDefinition['igVersion'];
  index: QuestionnaireIndex;
  initial: Map<string, Answer[]>;
  updated: Set<string>;
  added: Set<string>;
}

/**
 * Saved and fresh items, instance by instance. An item with any answer by the clinician (override, manual) is kept as
 * saved; automatic answers take the fresh values; an automatic answer the fresh prefill no longer gives is removed
 * (the EHR no longer supports it) unless it is the payer's (auto-server, a static initial value) or calculated.
 */
function mergeItems(
  merge: Merge,
  savedList: ResponseNode[],
  freshList: ResponseNode[],
  prefix: string,
): ResponseNode[] {
  const out: ResponseNode[] = [];
  const seen = new Map<string, number>();
  for (const node of savedList) {
    const n = seen.get(node.linkId) ?? 0;
    seen.set(node.linkId, n + 1);
    const path = `${prefix}${node.linkId}#${n}`;
    const fresh = freshList.filter((f) => f.linkId === node.linkId)[n];
    const next: ResponseNode = { ...node };
    const savedAnswers = node.answer ?? [];
    const byClinician = savedAnswers.some((a) => !isAutomatic(readOrigin(a)?.origin) || (a.item?.length ?? 0) > 0);
    if (byClinician && fresh?.answer?.length) {
      // spec-72: the clinician's answers stay; where the prefill now asserts a value, `manual` becomes `override`.
      next.answer = savedAnswers.map((a) => {
        const origin = readOrigin(a);
        if (origin?.origin !== 'manual') return a;
        merge.updated.add(node.linkId);
        return withOrigin(a, originExtension('override', merge.version, origin.author));
      });
    } else if (!byClinician && fresh?.answer?.length) {
      if (savedAnswers.length === 0) merge.added.add(node.linkId);
      else if (!sameValues(savedAnswers, fresh.answer)) merge.updated.add(node.linkId);
      next.answer = structuredClone(fresh.answer);
    } else if (!byClinician && savedAnswers.length > 0) {
      const definition = merge.index.byLinkId.get(node.linkId)?.definition;
      const payers = savedAnswers.every((a) => readOrigin(a)?.origin === 'auto-server');
      const kept =
        payers ||
        sameValues(savedAnswers, merge.initial.get(path)) ||
        (definition !== undefined && calculatedExpressionOf(definition) !== undefined);
      if (!kept) {
        delete next.answer;
        merge.updated.add(node.linkId);
      }
    }
    const children = mergeItems(merge, node.item ?? [], fresh?.item ?? [], `${path}/`);
    if (children.length > 0) next.item = children;
    else delete next.item;
    out.push(next);
  }
  const counts = new Map<string, number>();
  for (const fresh of freshList) {
    const n = counts.get(fresh.linkId) ?? 0;
    counts.set(fresh.linkId, n + 1);
    if (n < (seen.get(fresh.linkId) ?? 0)) continue;
    out.push(structuredClone(fresh));
    for (const [, instance] of instancesByPath([fresh]))
      if ((instance.answer?.length ?? 0) > 0) merge.added.add(instance.linkId);
  }
  return out;
}

/** Calculated values follow the merged answers (an override of an input changes them); nothing is dropped here. */
function followCalculations(form: FormDefinition, merge: Merge, saved: ResponseNode[], merged: ResponseNode[]): void {
  const { calculated, disabled } = recompute(form.questionnaire, merge.index, form.context, merged);
  const before = instancesByPath(saved);
  for (const [path, answers] of calculated) {
    if (disabled.has(linkIdOfPath(path)) || sameValues(answers, instancesByPath(merged).get(path)?.answer)) continue;
    if (before.get(path)?.answer?.some((a) => !isAutomatic(readOrigin(a)?.origin))) continue;
    const tagged = answers.map((a) => withOrigin(a, originExtension('auto-client', form.igVersion, undefined)));
    setAnswersAt(merged, path, tagged);
    merge.updated.add(linkIdOfPath(path));
  }
}

/** The first instant after a FHIR date or dateTime (a partial date covers its whole year, month or day). */
function endOf(text: string): number | undefined {
  const date = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(text);
  if (date) {
    const [, y, m, d] = date;
    if (d) return Date.UTC(Number(y), Number(m) - 1, Number(d) + 1);
    if (m) return Date.UTC(Number(y), Number(m), 1);
    return Date.UTC(Number(y) + 1, 0, 1);
  }
  const instant = Date.parse(text);
  return Number.isNaN(instant) || !/T/.test(text) ? undefined : instant + 1;
}

/**
 * A Questionnaire whose effectivePeriod has ended may no longer be answered: the response is stopped and the user told.
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#retrieving-questionnaire-packages (spec-123)
 */
export function expiredQuestionnaire(questionnaire: FhirResource, now: Date): string | undefined {
  const period = questionnaire['effectivePeriod'] as { end?: unknown } | undefined;
  if (!period || typeof period.end !== 'string') return undefined;
  const end = endOf(period.end);
  if (end === undefined || now.getTime() < end) return undefined;
  const title =
    typeof questionnaire['title'] === 'string'
      ? questionnaire['title']
      : typeof questionnaire['name'] === 'string'
        ? questionnaire['name']
        : 'This questionnaire';
  return `${title.slice(0, 200)} was in effect until ${period.end}: the payer no longer accepts answers to it, so this response is stopped. Ask the payer for the current questionnaire.`;
}

export function answerOrigins(
  response: FhirResource,
): Array<{ linkId: string; origin: Origin | 'auto'; author?: FormAuthor }> {
  const out: Array<{ linkId: string; origin: StoredOrigin; author?: FormAuthor }> = [];
  for (const node of instancesByPath(itemsOf(response)).values())
    for (const answer of node.answer ?? []) {
      const origin = readOrigin(answer);
      if (origin) out.push({ linkId: node.linkId, ...origin });
    }
  return out;
}
