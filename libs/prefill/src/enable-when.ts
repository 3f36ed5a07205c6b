import type { FhirResource } from '@dtr/fhir';
import { compileFhirPath } from './fhirpath-expressions.js';

interface EnableWhen {
  question: string;
  operator: 'exists' | '=' | '!=' | '>' | '<' | '>=' | '<=';
  [answer: `answer${string}`]: unknown;
}

interface QuestionnaireItem {
  linkId: string;
  enableWhen?: EnableWhen[];
  enableBehavior?: 'all' | 'any';
  extension?: Array<{ url?: string; valueExpression?: { language?: string; expression?: string } }>;
  item?: QuestionnaireItem[];
}

export interface ResponseItem {
  linkId: string;
  answer?: Array<Record<string, unknown>>;
  item?: ResponseItem[];
}

const ENABLE_WHEN_EXPRESSION = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-enableWhenExpression';

function valueOf(answer: Record<string, unknown>): unknown {
  for (const [key, value] of Object.entries(answer))
    if (key.startsWith('value') || key.startsWith('answer')) return value;
  return undefined;
}

function comparable(value: unknown): string | number | boolean | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value === 'object') {
    const v = value as { system?: string; code?: string; value?: number };
    if (v.code !== undefined) return `${v.system ?? ''}|${v.code}`;
    if (typeof v.value === 'number') return v.value;
    return JSON.stringify(value);
  }
  return value as string | number | boolean;
}

function matches(condition: EnableWhen, answers: Array<Record<string, unknown>>): boolean {
  if (condition.operator === 'exists') return answers.length > 0 === Boolean(condition['answerBoolean']);
  const expected = comparable(
    valueOf(Object.fromEntries(Object.entries(condition).filter(([k]) => k.startsWith('answer')))),
  );
  return answers.some((answer) => {
    const actual = comparable(valueOf(answer));
    if (actual === undefined || expected === undefined) return false;
    // A coding without a system in the condition matches on code alone.
    const a =
      typeof actual === 'string' && typeof expected === 'string' && expected.startsWith('|')
        ? `|${actual.split('|')[1] ?? actual}`
        : actual;
    switch (condition.operator) {
      case '=':
        return a === expected;
      case '!=':
        return a !== expected;
      case '>':
        return a > expected;
      case '<':
        return a < expected;
      case '>=':
        return a >= expected;
      case '<=':
        return a <= expected;
      default:
        return false;
    }
  });
}

/**
 * Removes the items that `enableWhen` / `enableWhenExpression` disable, given the answers so far. Enablement can
 * depend on items that are themselves disabled, so it is recomputed until it no longer changes; a questionnaire
 * whose conditions never settle is reported as a cycle (the last state is kept).
 * @see https://hl7.org/fhir/R4/questionnaire-definitions.html#Questionnaire.item.enableWhen
 */
export function applyEnableWhen(
  questionnaire: FhirResource,
  items: ResponseItem[],
  env: Record<string, unknown>,
): {
  items: ResponseItem[];
  disabled: Set<string>;
  cycle: boolean;
  failures: Array<{ linkId: string; message: string }>;
} {
  const definitions: QuestionnaireItem[] = [];
  const collect = (list: QuestionnaireItem[] | undefined) => {
    for (const item of list ?? []) {
      definitions.push(item);
      collect(item.item);
    }
  };
  collect(questionnaire['item'] as QuestionnaireItem[] | undefined);
  const conditional = definitions.filter(
    (d) => d.enableWhen?.length || d.extension?.some((e) => e.url === ENABLE_WHEN_EXPRESSION),
  );
  const failures: Array<{ linkId: string; message: string }> = [];

  const prune = (list: ResponseItem[], disabled: Set<string>): ResponseItem[] =>
    list
      .filter((i) => !disabled.has(i.linkId))
      .map((i) => (i.item ? { ...i, item: prune(i.item, disabled) } : i))
      .filter((i) => (i.answer?.length ?? 0) > 0 || (i.item?.length ?? 0) > 0);

  let disabled = new Set<string>();
  for (let round = 0; round <= definitions.length + 1; round++) {
    const current = prune(items, disabled);
    const answers = new Map<string, Array<Record<string, unknown>>>();
    const index = (list: ResponseItem[]) =>
      list.forEach((i) => (answers.set(i.linkId, i.answer ?? []), index(i.item ?? [])));
    index(current);
    const next = new Set<string>();
    for (const definition of conditional) {
      let enabled = true;
      if (definition.enableWhen?.length) {
        const results = definition.enableWhen.map((c) => matches(c, answers.get(c.question) ?? []));
        enabled = (definition.enableBehavior ?? 'all') === 'any' ? results.some(Boolean) : results.every(Boolean);
      }
      const expression = definition.extension?.find((e) => e.url === ENABLE_WHEN_EXPRESSION)?.valueExpression;
      if (enabled && expression?.expression && expression.language === 'text/fhirpath') {
        try {
          const result = compileFhirPath(expression.expression)(
            {},
            { ...env, resource: { resourceType: 'QuestionnaireResponse', item: current } },
          );
          enabled = result.length === 1 && result[0] === true;
        } catch (error) {
          if (round === 0)
            failures.push({
              linkId: definition.linkId,
              message: error instanceof Error ? error.message.slice(0, 160) : 'error',
            });
        }
      }
      if (!enabled) next.add(definition.linkId);
    }
    const settled = next.size === disabled.size && [...next].every((l) => disabled.has(l));
    disabled = next;
    if (settled) return { items: prune(items, disabled), disabled, cycle: false, failures };
  }
  return { items: prune(items, disabled), disabled, cycle: true, failures };
}
