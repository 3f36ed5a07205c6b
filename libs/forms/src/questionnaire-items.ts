import type { FhirResource } from '@dtr/fhir';
import { normaliseExtensionUrl, SDC } from '@dtr/fhir';

/**
 * The parts of a Questionnaire item the rules read, and the response tree they work on.
 * @see https://hl7.org/fhir/R4/questionnaire-definitions.html#Questionnaire.item
 */
export interface ItemDefinition {
  linkId: string;
  text?: string;
  type: string;
  required?: boolean;
  repeats?: boolean;
  readOnly?: boolean;
  maxLength?: number;
  answerValueSet?: string;
  answerOption?: Array<Record<string, unknown> & { initialSelected?: boolean }>;
  initial?: Array<Record<string, unknown>>;
  extension?: Array<
    { url?: string; valueExpression?: { language?: string; expression?: string; name?: string } } & Record<
      string,
      unknown
    >
  >;
  item?: ItemDefinition[];
}

export type Answer = Record<string, unknown> & { item?: ResponseNode[] };

export interface ResponseNode {
  linkId: string;
  text?: string;
  answer?: Answer[];
  item?: ResponseNode[];
}

const CALCULATED_EXPRESSION = `${SDC}sdc-questionnaire-calculatedExpression`;
const HIDDEN = 'http://hl7.org/fhir/StructureDefinition/questionnaire-hidden';
export const UNIT_OPTION = 'http://hl7.org/fhir/StructureDefinition/questionnaire-unitOption';
export const UNIT = 'http://hl7.org/fhir/StructureDefinition/questionnaire-unit';
export const REFERENCE_RESOURCE = 'http://hl7.org/fhir/StructureDefinition/questionnaire-referenceResource';
export const MAX_SIZE = 'http://hl7.org/fhir/StructureDefinition/maxSize';
export const MIME_TYPE = 'http://hl7.org/fhir/StructureDefinition/mimeType';

interface IndexedItem {
  definition: ItemDefinition;
  /** linkId of the enclosing item, undefined at the root. */
  parent?: string;
  /** Position in document order: siblings of a response are sorted by it. */
  order: number;
}

export interface QuestionnaireIndex {
  byLinkId: Map<string, IndexedItem>;
  /** Root items, in order. */
  roots: ItemDefinition[];
}

const indexes = new WeakMap<object, QuestionnaireIndex>();

/** Every item of a Questionnaire by linkId, read once per Questionnaire object. */
export function indexQuestionnaire(questionnaire: FhirResource): QuestionnaireIndex {
  const known = indexes.get(questionnaire);
  if (known) return known;
  const byLinkId = new Map<string, IndexedItem>();
  let order = 0;
  const walk = (items: ItemDefinition[] | undefined, parent: string | undefined) => {
    for (const definition of Array.isArray(items) ? items : []) {
      if (!definition || typeof definition.linkId !== 'string' || byLinkId.has(definition.linkId)) continue;
      byLinkId.set(definition.linkId, { definition, ...(parent !== undefined ? { parent } : {}), order: order++ });
      walk(definition.item, definition.linkId);
    }
  };
  const roots = (Array.isArray(questionnaire['item']) ? questionnaire['item'] : []) as ItemDefinition[];
  walk(roots, undefined);
  const index = { byLinkId, roots };
  indexes.set(questionnaire, index);
  return index;
}

/** Whether an extension has this URL (real content misspells some as `hhttp://`). */
export const hasUrl = (e: { url?: unknown }, url: string): boolean =>
  typeof e?.url === 'string' && normaliseExtensionUrl(e.url).url === url;

export const isHidden = (d: ItemDefinition): boolean =>
  (Array.isArray(d.extension) ? d.extension : []).some((e) => hasUrl(e, HIDDEN) && e['valueBoolean'] === true);

export const calculatedExpressionOf = (d: ItemDefinition): string | undefined => {
  const e = (Array.isArray(d.extension) ? d.extension : []).find((x) =>
    hasUrl(x, CALCULATED_EXPRESSION),
  )?.valueExpression;
  return e?.language === 'text/fhirpath' && e.expression ? e.expression : undefined;
};

/** The value[x] entry of an answer (or of an initial / answerOption element). */
export function valueEntry(answer: Record<string, unknown>): [string, unknown] | undefined {
  for (const [key, value] of Object.entries(answer)) if (key.startsWith('value')) return [key, value];
  return undefined;
}

/**
 * A comparable form of an answer's value: codings by system and code (display is presentation), quantities by
 * value and unit code, everything else by its JSON with sorted keys.
 */
export function valueKey(answer: Record<string, unknown>): string {
  const entry = valueEntry(answer);
  if (!entry) return '';
  const [key, value] = entry;
  if (key === 'valueCoding' && value && typeof value === 'object') {
    const c = value as { system?: string; code?: string };
    return `coding:${c.system ?? ''}|${c.code ?? ''}`;
  }
  if (key === 'valueQuantity' && value && typeof value === 'object') {
    const q = value as { value?: number; code?: string; unit?: string };
    return `quantity:${q.value}|${q.code ?? q.unit ?? ''}`;
  }
  if (key === 'valueReference' && value && typeof value === 'object')
    return `reference:${(value as { reference?: string }).reference ?? ''}`;
  return `${key}:${stableJson(value)}`;
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value && typeof value === 'object')
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(value);
}

export const sameValues = (a: Answer[] = [], b: Answer[] = []): boolean =>
  a.length === b.length && a.every((x, i) => valueKey(x) === valueKey(b[i]!));

/**
 * Every item instance of a response by its path: `linkId#n` per level, n counting the siblings with that linkId
 * (repeating groups), `/answer#k/` where an item sits under an answer.
 */
export function instancesByPath(items: ResponseNode[] | undefined): Map<string, ResponseNode> {
  const out = new Map<string, ResponseNode>();
  const walk = (list: ResponseNode[] | undefined, prefix: string) => {
    const seen = new Map<string, number>();
    for (const node of list ?? []) {
      const n = seen.get(node.linkId) ?? 0;
      seen.set(node.linkId, n + 1);
      const path = `${prefix}${node.linkId}#${n}`;
      out.set(path, node);
      walk(node.item, `${path}/`);
      (node.answer ?? []).forEach((a, k) => walk(a.item, `${path}/answer#${k}/`));
    }
  };
  walk(items, '');
  return out;
}

export const linkIdOfPath = (path: string): string => {
  const last = path.slice(path.lastIndexOf('/') + 1);
  return last.slice(0, last.lastIndexOf('#'));
};

/** A deep copy of a response tree (answers' values are JSON). */
export const cloneTree = (items: ResponseNode[]): ResponseNode[] => structuredClone(items);

/** Sets the answers of the item instance at `path`, creating the instance (and its parents) when absent. */
export function setAnswersAt(items: ResponseNode[], path: string, answers: Answer[]): void {
  const steps = path.split('/');
  let list = items;
  for (let s = 0; s < steps.length; s++) {
    const step = steps[s]!;
    const hash = step.lastIndexOf('#');
    const linkId = step.slice(0, hash);
    const n = Number(step.slice(hash + 1));
    if (linkId === 'answer') return; // items under answers are never created here
    const same = list.filter((i) => i.linkId === linkId);
    let node = same[n];
    if (!node) {
      if (n !== same.length) return;
      node = { linkId };
      list.push(node);
    }
    if (s === steps.length - 1) {
      if (answers.length > 0) node.answer = answers;
      else delete node.answer;
      return;
    }
    node.item ??= [];
    list = node.item;
  }
}

/** Removes items with neither answers nor children (after answers were dropped), and sorts siblings by the form. */
export function tidy(items: ResponseNode[], index: QuestionnaireIndex): ResponseNode[] {
  const order = (linkId: string) => index.byLinkId.get(linkId)?.order ?? Number.MAX_SAFE_INTEGER;
  return items
    .map((node) => {
      const next: ResponseNode = { ...node };
      if (node.item) next.item = tidy(node.item, index);
      if (!next.item?.length) delete next.item;
      if (node.answer) next.answer = node.answer.map((a) => (a.item ? { ...a, item: tidy(a.item, index) } : a));
      if (!next.answer?.length) delete next.answer;
      return next;
    })
    .filter((node) => (node.answer?.length ?? 0) > 0 || (node.item?.length ?? 0) > 0)
    .map((node, i) => ({ node, i }))
    .sort((a, b) => order(a.node.linkId) - order(b.node.linkId) || a.i - b.i)
    .map(({ node }) => node);
}

/** The paths of the static `initial[x]` values (and `answerOption.initialSelected`), first instance of each parent. */
export function initialValues(index: QuestionnaireIndex): Map<string, Answer[]> {
  const out = new Map<string, Answer[]>();
  const walk = (items: ItemDefinition[] | undefined, prefix: string) => {
    for (const d of items ?? []) {
      const path = `${prefix}${d.linkId}#0`;
      const initial = (Array.isArray(d.initial) ? d.initial : [])
        .map((i) => valueEntry(i))
        .filter((e): e is [string, unknown] => e !== undefined)
        .map(([k, v]) => ({ [k]: v }) as Answer);
      const selected = (Array.isArray(d.answerOption) ? d.answerOption : [])
        .filter((o) => o.initialSelected === true)
        .map((o) => valueEntry(o))
        .filter((e): e is [string, unknown] => e !== undefined)
        .map(([k, v]) => ({ [k]: v }) as Answer);
      const values = [...initial, ...selected];
      if (values.length > 0 && d.type !== 'group' && d.type !== 'display')
        out.set(path, d.repeats ? values : values.slice(0, 1));
      walk(d.item, `${path}/`);
    }
  };
  walk(index.roots, '');
  return out;
}
