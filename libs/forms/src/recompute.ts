import type { FhirResource } from '@dtr/fhir';
import { applyEnableWhen, compileFhirPath, rootVariables, toAnswers, VARIABLE } from '@dtr/prefill';
import {
  type Answer,
  calculatedExpressionOf,
  type ItemDefinition,
  instancesByPath,
  linkIdOfPath,
  type QuestionnaireIndex,
  type ResponseNode,
  sameValues,
  setAnswersAt,
} from './questionnaire-items.js';

/**
 * Calculated values and enablement, recomputed together until neither changes: a calculatedExpression reads the
 * enabled answers (FHIRPath over %resource, the launch context and the questionnaire's variables), and enableWhen /
 * enableWhenExpression read the calculated values. Disabled items are removed from the result; a form that never
 * settles keeps its last state and says so.
 * @see https://hl7.org/fhir/uv/sdc/STU3/behavior.html#calculatedExpression
 * @see https://hl7.org/fhir/R4/questionnaire-definitions.html#Questionnaire.item.enableWhen
 */

const MAX_ROUNDS = 10;

interface Recomputed {
  items: ResponseNode[];
  /** linkIds disabled in the final state. */
  disabled: Set<string>;
  /** The recomputed answers of each calculated item instance (path → answers; empty when the expression gave nothing). */
  calculated: Map<string, Answer[]>;
  settled: boolean;
  /** Calculated items whose expression failed here: their answers are left as they were. */
  failures: string[];
}

/** The FHIRPath environment over a response; a root variable that fails is left out (expressions using it fail). */
function environment(
  questionnaire: FhirResource,
  context: Record<string, unknown> | undefined,
  items: ResponseNode[],
): Record<string, unknown> {
  const env: Record<string, unknown> = {
    ...(context ?? {}),
    questionnaire,
    resource: { resourceType: 'QuestionnaireResponse', item: items },
  };
  for (const variable of rootVariables(questionnaire)) {
    try {
      env[variable.name] = compileFhirPath(variable.expression)({}, env);
    } catch {
      delete env[variable.name];
    }
  }
  return env;
}

/** Removes the disabled items (and what they hold); reports the linkIds whose answers went with them. */
export function pruneDisabled(items: ResponseNode[], disabled: Set<string>, dropped?: Set<string>): ResponseNode[] {
  const record = (node: ResponseNode) => {
    if (!dropped) return;
    if ((node.answer?.length ?? 0) > 0) dropped.add(node.linkId);
    node.item?.forEach(record);
    node.answer?.forEach((a) => a.item?.forEach(record));
  };
  const walk = (list: ResponseNode[]): ResponseNode[] =>
    list
      .filter((node) => {
        if (!disabled.has(node.linkId)) return true;
        record(node);
        return false;
      })
      .map((node) => ({
        ...node,
        ...(node.item ? { item: walk(node.item) } : {}),
        ...(node.answer ? { answer: node.answer.map((a) => (a.item ? { ...a, item: walk(a.item) } : a)) } : {}),
      }));
  return walk(items);
}

/** Items nested under answers (a question's children) lifted beside the question's own children, as enableWhen reads them. */
function liftAnswerItems(items: ResponseNode[]): ResponseNode[] {
  return items.map((node) => {
    const nested = (node.answer ?? []).flatMap((a) => a.item ?? []);
    const children = [...(node.item ?? []), ...nested];
    return {
      linkId: node.linkId,
      ...(node.answer ? { answer: node.answer.map(({ item: _nested, ...a }) => a) } : {}),
      ...(children.length > 0 ? { item: liftAnswerItems(children) } : {}),
    };
  });
}

/** Evaluates one calculated item at one instance; undefined when the expression fails. */
function calculate(
  definition: ItemDefinition,
  expression: string,
  env: Record<string, unknown>,
  failures: Set<string>,
): Answer[] | undefined {
  const scoped = { ...env };
  for (const ext of definition.extension ?? []) {
    const v = ext.valueExpression;
    if (ext.url !== VARIABLE || !v?.name || v.language !== 'text/fhirpath' || !v.expression) continue;
    try {
      scoped[v.name] = compileFhirPath(v.expression)({}, scoped);
    } catch {
      failures.add(definition.linkId);
    }
  }
  try {
    const values = compileFhirPath(expression)({}, scoped);
    return toAnswers(values.length === 1 ? values[0] : values, definition as never) as Answer[];
  } catch {
    failures.add(definition.linkId);
    return undefined;
  }
}

export function recompute(
  questionnaire: FhirResource,
  index: QuestionnaireIndex,
  context: Record<string, unknown> | undefined,
  start: ResponseNode[],
): Recomputed {
  const items = structuredClone(start);
  const calculatedDefinitions = [...index.byLinkId.values()]
    .map((i) => i.definition)
    .filter((d) => calculatedExpressionOf(d) !== undefined);
  const failures = new Set<string>();
  const calculated = new Map<string, Answer[]>();
  let disabled = new Set<string>();
  let settled = false;
  for (let round = 0; round < MAX_ROUNDS && !settled; round++) {
    let env = environment(questionnaire, context, pruneDisabled(items, disabled));
    const enablement = applyEnableWhen(questionnaire, liftAnswerItems(pruneDisabled(items, disabled)), env);
    const nextDisabled = enablement.disabled;
    let changed = nextDisabled.size !== disabled.size || [...nextDisabled].some((l) => !disabled.has(l));
    disabled = nextDisabled;
    if (calculatedDefinitions.length > 0) env = environment(questionnaire, context, pruneDisabled(items, disabled));
    for (const definition of calculatedDefinitions) {
      if (disabled.has(definition.linkId)) continue;
      const answers = calculate(definition, calculatedExpressionOf(definition)!, env, failures);
      if (answers === undefined) continue;
      for (const path of pathsFor(items, index, definition.linkId)) {
        const current = instancesByPath(items).get(path)?.answer ?? [];
        calculated.set(path, answers);
        if (!sameValues(current, answers)) {
          setAnswersAt(items, path, answers);
          changed = true;
        }
      }
    }
    settled = !changed;
  }
  return { items: pruneDisabled(items, disabled), disabled, calculated, settled, failures: [...failures] };
}

/**
 * Where a calculated item lives: each existing instance, or the first instance under each existing parent instance
 * (a calculated item the page left out is created where its parent is).
 */
function pathsFor(items: ResponseNode[], index: QuestionnaireIndex, linkId: string): string[] {
  const instances = [...instancesByPath(items).keys()];
  const existing = instances.filter((p) => linkIdOfPath(p) === linkId);
  if (existing.length > 0) return existing;
  const parent = index.byLinkId.get(linkId)?.parent;
  if (parent === undefined) return [`${linkId}#0`];
  return instances.filter((p) => linkIdOfPath(p) === parent && !p.includes('/answer#')).map((p) => `${p}/${linkId}#0`);
}
