import { type FhirResource, type Issue, normaliseExtensionUrl, SDC } from '@dtr/fhir';
import { type Answer, type ItemShape, toAnswers } from './answers.js';
import type { ResponseItem } from './enable-when.js';
import { compileFhirPath, rootVariables, VARIABLE } from './fhirpath-expressions.js';

/**
 * SDC expression-based population, after the CQL defines are evaluated: each item's `initialExpression` (and legacy
 * `cqf-expression`), `candidateExpression` (answer options offered), `contextExpression` (context shown with the
 * item), item-level `variable`s, `itemPopulationContext` (one repetition of a repeating group per context value), then
 * `calculatedExpression`s recomputed against the response until nothing changes (a cycle is reported, never a hang).
 * FHIRPath expressions are evaluated here; CQL ones come from the evaluated defines through `cql`.
 * @see https://hl7.org/fhir/uv/sdc/STU3/populate.html#expression-based-population
 */

type ExpressionKind =
  | 'initialExpression'
  | 'cqf-expression'
  | 'calculatedExpression'
  | 'candidateExpression'
  | 'contextExpression'
  | 'itemPopulationContext';

const KIND_BY_URL = new Map<string, ExpressionKind>([
  [`${SDC}sdc-questionnaire-initialExpression`, 'initialExpression'],
  ['http://hl7.org/fhir/StructureDefinition/cqf-expression', 'cqf-expression'],
  [`${SDC}sdc-questionnaire-calculatedExpression`, 'calculatedExpression'],
  [`${SDC}sdc-questionnaire-candidateExpression`, 'candidateExpression'],
  [`${SDC}sdc-questionnaire-contextExpression`, 'contextExpression'],
  [`${SDC}sdc-questionnaire-itemPopulationContext`, 'itemPopulationContext'],
]);

interface Expression {
  name?: string;
  language?: string;
  expression?: string;
}

interface PopulationItem extends ItemShape {
  linkId: string;
  text?: string;
  item?: PopulationItem[];
  answerValueSet?: string;
  extension?: Array<{ url?: string; valueExpression?: Expression }>;
}

type PopulationIssue = Pick<Issue, 'severity' | 'code' | 'message' | 'linkId'>;

export interface PopulationInput {
  questionnaire: FhirResource;
  /** FHIRPath environment: %patient, %questionnaire, launch contexts, root variables. */
  env: Record<string, unknown>;
  /** The value of a CQL expression of this kind on this item, when one was evaluated. */
  cql(kind: ExpressionKind, linkId: string): { value: unknown } | undefined;
  /** The item with its answer options resolved (answerValueSet expanded). */
  optionsFor(item: PopulationItem): ItemShape;
  /** The `information-origin` extension put on every answer. */
  origin: Record<string, unknown>;
}

export interface PopulationResult {
  items: ResponseItem[];
  /** candidateExpression: answer options offered per item (linkId). */
  options: Record<string, Array<Record<string, unknown>>>;
  /** contextExpression: what to show with each item (linkId). */
  answerContext: Record<string, unknown[]>;
  /** The environment after population (root variables against the final response), for enableWhenExpression. */
  env: Record<string, unknown>;
  issues: PopulationIssue[];
}

const parsedItems = new WeakMap<object, { byKind: Map<ExpressionKind, Expression>; variables: Expression[] }>();

/** The Expression extensions of an item, by kind (first of each kind), and its variables in order; read once per item. */
function expressionsOf(item: PopulationItem): { byKind: Map<ExpressionKind, Expression>; variables: Expression[] } {
  const known = parsedItems.get(item);
  if (known) return known;
  const parsed = readExpressions(item);
  parsedItems.set(item, parsed);
  return parsed;
}

function readExpressions(item: PopulationItem): { byKind: Map<ExpressionKind, Expression>; variables: Expression[] } {
  const byKind = new Map<ExpressionKind, Expression>();
  const variables: Expression[] = [];
  for (const extension of item.extension ?? []) {
    if (!extension.url || !extension.valueExpression) continue;
    const url = normaliseExtensionUrl(extension.url).url;
    if (url === VARIABLE) variables.push(extension.valueExpression);
    const kind = KIND_BY_URL.get(url);
    if (kind && !byKind.has(kind)) byKind.set(kind, extension.valueExpression);
  }
  return { byKind, variables };
}

const MAX_CALCULATION_ROUNDS = 10;

/** The FHIR JSON inside a cql-exec-fhir value, or the value itself. */
const plain = (value: unknown): unknown =>
  value && typeof value === 'object' && '_json' in value ? (value as { _json: unknown })._json : value;

/** One population run: the issues, options and context it collects, and the expression evaluation it shares. */
class Population {
  readonly issues: PopulationIssue[] = [];
  readonly options: PopulationResult['options'] = {};
  readonly answerContext: PopulationResult['answerContext'] = {};
  private readonly failed = new Set<string>();

  constructor(private readonly input: PopulationInput) {}

  fail(linkId: string | undefined, what: string, error: unknown): void {
    const key = `${linkId ?? ''}|${what}`;
    if (this.failed.has(key)) return;
    this.failed.add(key);
    this.issues.push({
      severity: 'warning',
      code: 'expression-failed',
      message: `${what}: ${error instanceof Error ? error.message.slice(0, 160) : 'error'}`,
      ...(linkId ? { linkId } : {}),
    });
  }

  /** Evaluates an item's expression of a kind: FHIRPath here, CQL from the evaluated defines; undefined when none. */
  evaluate(
    item: PopulationItem,
    kind: ExpressionKind,
    expression: Expression,
    env: Record<string, unknown>,
  ): unknown[] | undefined {
    if (expression.language === 'text/fhirpath' && expression.expression) {
      try {
        return compileFhirPath(expression.expression)({}, env);
      } catch (error) {
        this.fail(item.linkId, `${kind} "${expression.expression.slice(0, 60)}"`, error);
        return undefined;
      }
    }
    const value = this.input.cql(kind, item.linkId);
    if (!value) return undefined;
    const v = value.value;
    return v === null || v === undefined ? [] : Array.isArray(v) ? v : [v];
  }

  withVariables(item: PopulationItem, variables: Expression[], env: Record<string, unknown>): Record<string, unknown> {
    if (variables.length === 0) return env;
    const scoped = { ...env };
    for (const variable of variables) {
      if (!variable.name || variable.language !== 'text/fhirpath' || !variable.expression) continue;
      try {
        scoped[variable.name] = compileFhirPath(variable.expression)({}, scoped);
      } catch (error) {
        this.fail(item.linkId, `variable ${variable.name}`, error);
      }
    }
    return scoped;
  }

  private answersFor(item: PopulationItem, values: unknown[] | undefined, kind: ExpressionKind): Answer[] {
    if (values === undefined) return [];
    const answers = toAnswers(values.length === 1 ? values[0] : values, this.input.optionsFor(item));
    if (answers.length === 0 && values.some((v) => v !== null && v !== undefined)) {
      this.issues.push({
        severity: 'information',
        code: 'answer-type-mismatch',
        message: `the value of the ${kind} does not fit a ${item.type} item`,
        linkId: item.linkId,
      });
    }
    return answers;
  }

  tag(answers: Answer[]): Answer[] {
    return answers.map((a) => ({ ...a, extension: [this.input.origin] }));
  }

  /** Initial values, options, context and repeating-group contexts, item by item. */
  build(items: PopulationItem[] | undefined, env: Record<string, unknown>): ResponseItem[] {
    const out: ResponseItem[] = [];
    for (const item of items ?? []) {
      if (item.type === 'display') continue;
      const { byKind, variables } = expressionsOf(item);
      const populationContext = byKind.get('itemPopulationContext');
      if (populationContext && item.type === 'group')
        out.push(...this.repeated(item, populationContext, variables, env));
      else {
        const built = this.item(item, byKind, this.withVariables(item, variables, env));
        if (built) out.push(built);
      }
    }
    return out;
  }

  /** A group repeated once per value of its itemPopulationContext. */
  private repeated(
    item: PopulationItem,
    populationContext: Expression,
    variables: Expression[],
    env: Record<string, unknown>,
  ): ResponseItem[] {
    // CQL gives wrapped FHIR values: the FHIRPath of the group's items reads their JSON.
    const contexts = (
      this.evaluate(item, 'itemPopulationContext', populationContext, this.withVariables(item, variables, env)) ?? []
    ).map(plain);
    const name = populationContext.name ?? 'itemContext';
    const out: ResponseItem[] = [];
    for (const context of contexts) {
      const children = this.build(item.item, this.withVariables(item, variables, { ...env, [name]: context }));
      if (children.length > 0)
        out.push({ linkId: item.linkId, ...(item.text ? { text: item.text } : {}), item: children } as ResponseItem);
    }
    return out;
  }

  private item(
    item: PopulationItem,
    byKind: Map<ExpressionKind, Expression>,
    scoped: Record<string, unknown>,
  ): ResponseItem | undefined {
    const candidate = byKind.get('candidateExpression');
    if (candidate) {
      const values = this.evaluate(item, 'candidateExpression', candidate, scoped);
      const offered = values ? toAnswers(values, { ...this.input.optionsFor(item), repeats: true }) : [];
      if (offered.length > 0) this.options[item.linkId] = offered;
    }
    const context = byKind.get('contextExpression');
    if (context) {
      const values = this.evaluate(item, 'contextExpression', context, scoped);
      if (values && values.length > 0) this.answerContext[item.linkId] = values.map(plain);
    }
    const initial = byKind.get('initialExpression') ?? byKind.get('cqf-expression');
    const kind: ExpressionKind = byKind.has('initialExpression') ? 'initialExpression' : 'cqf-expression';
    let answers = initial ? this.answersFor(item, this.evaluate(item, kind, initial, scoped), kind) : [];
    // A calculated value in CQL does not depend on the response: it is known now.
    const calculated = byKind.get('calculatedExpression');
    if (calculated && calculated.language !== 'text/fhirpath')
      answers = this.answersFor(
        item,
        this.evaluate(item, 'calculatedExpression', calculated, scoped),
        'calculatedExpression',
      );
    const children = this.build(item.item, scoped);
    if (answers.length === 0 && children.length === 0 && !(calculated?.language === 'text/fhirpath')) return undefined;
    return {
      linkId: item.linkId,
      ...(item.text ? { text: item.text } : {}),
      ...(answers.length > 0 ? { answer: this.tag(answers) } : {}),
      ...(children.length > 0 ? { item: children } : {}),
    } as ResponseItem;
  }

  /** Calculated values (FHIRPath over %resource and the variables), recomputed to a steady state. */
  calculate(
    calculatedItems: PopulationItem[],
    start: ResponseItem[],
    resourceEnv: (list: ResponseItem[]) => Record<string, unknown>,
  ): { items: ResponseItem[]; env: Record<string, unknown> } {
    let items = start;
    let env = resourceEnv(items);
    if (calculatedItems.length === 0) return { items, env };
    let settled = false;
    for (let round = 0; round < MAX_CALCULATION_ROUNDS && !settled; round++) {
      settled = true;
      for (const definition of calculatedItems) {
        const { byKind, variables } = expressionsOf(definition);
        const values = this.evaluate(
          definition,
          'calculatedExpression',
          byKind.get('calculatedExpression')!,
          this.withVariables(definition, variables, env),
        );
        const answers = values
          ? this.tag(toAnswers(values.length === 1 ? values[0] : values, this.input.optionsFor(definition)))
          : [];
        const next = setAnswers(items, definition.linkId, answers);
        if (next !== items) {
          items = next;
          settled = false;
        }
      }
      if (!settled) env = resourceEnv(items);
    }
    if (!settled) {
      this.issues.push({
        severity: 'warning',
        code: 'calculation-cycle',
        message: `calculated values still change after ${MAX_CALCULATION_ROUNDS} rounds: check the calculatedExpressions; the last values are kept`,
      });
    }
    return { items, env };
  }
}

/** Items kept only for a calculation that gave nothing are dropped. */
const prune = (list: ResponseItem[]): ResponseItem[] =>
  list
    .map((i) => (i.item ? { ...i, item: prune(i.item) } : i))
    .filter((i) => (i.answer?.length ?? 0) > 0 || (i.item?.length ?? 0) > 0);

export function populate(input: PopulationInput): PopulationResult {
  const population = new Population(input);
  // Root variables see %resource, the response so far (empty while initial values are computed).
  const { rootVariables, calculatedItems, variablesUsedEarly } = shapeOf(input.questionnaire);
  const resourceEnv = (list: ResponseItem[]): Record<string, unknown> => {
    const env: Record<string, unknown> = {
      ...input.env,
      resource: { resourceType: 'QuestionnaireResponse', item: list },
    };
    for (const variable of rootVariables) {
      try {
        env[variable.name] = compileFhirPath(variable.expression)({}, env);
      } catch (error) {
        population.fail(undefined, `variable ${variable.name}`, error);
      }
    }
    return env;
  };
  // Root variables are computed for the initial values only when an expression other than a calculation uses them.
  const initial = population.build(
    input.questionnaire['item'] as PopulationItem[] | undefined,
    variablesUsedEarly
      ? resourceEnv([])
      : { ...input.env, resource: { resourceType: 'QuestionnaireResponse', item: [] } },
  );
  const { items, env } = population.calculate(calculatedItems, initial, resourceEnv);
  return {
    items: prune(items),
    options: population.options,
    answerContext: population.answerContext,
    env,
    issues: population.issues,
  };
}

interface QuestionnaireShape {
  rootVariables: Array<{ name: string; expression: string }>;
  /** Items whose calculatedExpression is FHIRPath (recomputed over the response). */
  calculatedItems: PopulationItem[];
  /** Whether an expression other than a calculation (or another root variable) names a root variable. */
  variablesUsedEarly: boolean;
}
const shapes = new WeakMap<object, QuestionnaireShape>();

/** What population needs to know of a questionnaire's structure, read once per Questionnaire object. */
function shapeOf(questionnaire: FhirResource): QuestionnaireShape {
  let shape = shapes.get(questionnaire);
  if (!shape) {
    const calculatedItems: PopulationItem[] = [];
    const early: string[] = [];
    const walk = (items: PopulationItem[] | undefined) => {
      for (const item of items ?? []) {
        if (expressionsOf(item).byKind.get('calculatedExpression')?.language === 'text/fhirpath')
          calculatedItems.push(item);
        for (const ext of item.extension ?? []) {
          const e = ext.valueExpression;
          if (
            e?.language === 'text/fhirpath' &&
            e.expression &&
            !normaliseExtensionUrl(ext.url ?? '').url.endsWith('calculatedExpression')
          )
            early.push(e.expression);
        }
        walk(item.item);
      }
    };
    walk(questionnaire['item'] as PopulationItem[] | undefined);
    const variables = rootVariables(questionnaire);
    early.push(...variables.map((v) => v.expression));
    shape = {
      rootVariables: variables,
      calculatedItems,
      variablesUsedEarly: variables.some((v) => early.some((text) => text.includes(`%${v.name}`))),
    };
    shapes.set(questionnaire, shape);
  }
  return shape;
}

/** The response with this item's answers replaced (the same array when nothing changed). */
function setAnswers(items: ResponseItem[], linkId: string, answers: Array<Record<string, unknown>>): ResponseItem[] {
  let changed = false;
  const walk = (list: ResponseItem[]): ResponseItem[] =>
    list.map((i) => {
      if (i.linkId === linkId) {
        if (JSON.stringify(i.answer ?? []) === JSON.stringify(answers)) return i;
        changed = true;
        const { answer: _old, ...rest } = i;
        return answers.length > 0 ? { ...rest, answer: answers } : rest;
      }
      if (!i.item) return i;
      const inner = walk(i.item);
      return inner.some((x, n) => x !== i.item![n]) ? { ...i, item: inner } : i;
    });
  const next = walk(items);
  return changed ? next : items;
}
