import type { FhirResource } from './fhir-client.js';
import { CQF_EXPRESSION, CQF_LIBRARY, normaliseExtensionUrl, SDC } from './questionnaire-package.js';

/** Extensions whose value is an Expression, by (normalised) URL. */
const EXPRESSION_EXTENSIONS = new Map<string, string>([
  [`${SDC}sdc-questionnaire-initialExpression`, 'initialExpression'],
  [`${SDC}sdc-questionnaire-candidateExpression`, 'candidateExpression'],
  [`${SDC}sdc-questionnaire-calculatedExpression`, 'calculatedExpression'],
  [`${SDC}sdc-questionnaire-enableWhenExpression`, 'enableWhenExpression'],
  [`${SDC}sdc-questionnaire-contextExpression`, 'contextExpression'],
  [`${SDC}sdc-questionnaire-itemPopulationContext`, 'itemPopulationContext'],
  [`${SDC}sdc-questionnaire-answerExpression`, 'answerExpression'],
  ['http://hl7.org/fhir/StructureDefinition/variable', 'variable'],
  [CQF_EXPRESSION, 'cqf-expression'],
]);

/**
 * The kind of an extension whose value is an Expression (`calculatedExpression`, `variable`, `cqf-expression`, …) by
 * its URL, a misspelled scheme (`hhttp://`) forgiven; undefined for any other extension.
 */
export function expressionKindOf(url: string): string | undefined {
  return EXPRESSION_EXTENSIONS.get(normaliseExtensionUrl(url).url);
}

export interface ExpressionRef {
  kind: string;
  language: string;
  expression: string;
  linkId?: string;
}

interface Extension {
  url?: string;
  valueCanonical?: string;
  valueExpression?: { language?: string; expression?: string };
  extension?: Extension[];
}

interface Item {
  linkId?: string;
  extension?: Extension[];
  item?: Item[];
}

/** `"Lib".Define`, `Lib.Define`, `Lib."Define name"`; or just a define name. */
export function parseCqlReference(expression: string): { library?: string; define: string } | undefined {
  const text = expression.trim();
  const qualified = /^"?([A-Za-z_][A-Za-z0-9_\-]*)"?\s*\.\s*(?:"([^"]+)"|([A-Za-z_][A-Za-z0-9_]*))$/.exec(text);
  if (qualified) return { library: qualified[1]!, define: qualified[2] ?? qualified[3]! };
  const bare = /^(?:"([^"]+)"|([A-Za-z_][A-Za-z0-9_]*))$/.exec(text);
  // `true`, `false` and `null` are CQL literals, not defines.
  if (bare?.[2] && /^(true|false|null)$/i.test(bare[2])) return undefined;
  if (bare) return { define: bare[1] ?? bare[2]! };
  return undefined;
}

/**
 * A `text/cql-identifier` expression: one define's name, which may have spaces (`Gender Code`), quoted or not, or
 * qualified by its library. Undefined when it is not a name.
 */
export function parseCqlIdentifier(expression: string): { library?: string; define: string } | undefined {
  const parsed = parseCqlReference(expression);
  if (parsed) return parsed;
  const name = expression.trim().replace(/^"(.*)"$/, '$1');
  return name && !name.includes('"') && !/^(true|false|null)$/i.test(name) ? { define: name } : undefined;
}

/** Every cqf-library canonical and Expression of a Questionnaire (root and items, recursively). */
export function questionnaireReferences(questionnaire: FhirResource): {
  libraries: string[];
  expressions: ExpressionRef[];
  misspelled: string[];
} {
  const libraries: string[] = [];
  const expressions: ExpressionRef[] = [];
  const misspelled: string[] = [];
  const visit = (extensions: Extension[] | undefined, linkId: string | undefined) => {
    for (const extension of extensions ?? []) {
      if (!extension.url) continue;
      const { url, misspelled: wrong } = normaliseExtensionUrl(extension.url);
      if (wrong) misspelled.push(extension.url);
      if (url === CQF_LIBRARY && extension.valueCanonical) libraries.push(extension.valueCanonical);
      const kind = EXPRESSION_EXTENSIONS.get(url);
      if (kind && extension.valueExpression?.expression) {
        expressions.push({
          kind,
          language: extension.valueExpression.language ?? '',
          expression: extension.valueExpression.expression,
          ...(linkId ? { linkId } : {}),
        });
      }
      // `variable` and complex extensions can nest.
      if (extension.extension) visit(extension.extension, linkId);
    }
  };
  const walk = (items: Item[] | undefined) => {
    for (const item of items ?? []) {
      visit(item.extension, item.linkId);
      walk(item.item);
    }
  };
  visit(questionnaire['extension'] as Extension[] | undefined, undefined);
  walk(questionnaire['item'] as Item[] | undefined);
  return { libraries, expressions, misspelled };
}
