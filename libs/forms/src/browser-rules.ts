import { expressionKindOf } from '@dtr/fhir';
import { regexBacktrackRisk } from './regex-risk.js';

/**
 * The copy of a payer's Questionnaire that the form page's renderer gets. The renderer evaluates the SDC expressions
 * of the questionnaire in the clinician's tab on every keystroke, where nothing can stop a runaway expression: a
 * payer's regular expression that backtracks exponentially on what was typed would freeze the page. The server
 * evaluates the same rules at each save in a bounded worker, so an expression the tab cannot run safely is taken out
 * of the tab's copy and left to the server: its result appears when the clinician saves.
 *
 * An expression is left to the server when a `matches`, `matchesFull` or `replaceMatches` in it takes a pattern that
 * is not a literal, or a literal whose shape may backtrack (./regex-risk.ts); and when it uses a variable so left.
 */

const REGEX_FUNCTIONS = new Set(['matches', 'matchesFull', 'replaceMatches']);

/** A payer rule the page does not evaluate: the server does, at each save. */
export interface ServerOnlyRule {
  /** The item it belongs to; none for a questionnaire-level variable. */
  linkId?: string;
  kind: string;
  /** The variable's name, for a variable. */
  name?: string;
  reason: string;
}

interface Extension {
  url?: unknown;
  valueExpression?: { language?: unknown; expression?: unknown; name?: unknown };
}
interface Node {
  linkId?: unknown;
  extension?: unknown;
  item?: unknown;
  [key: string]: unknown;
}

/** A FHIRPath string literal's value (`'...'` with FHIRPath's escapes). */
function unescapeLiteral(body: string): string {
  return body.replace(/\\(u[0-9a-fA-F]{4}|.)/g, (_, e: string) => {
    if (e.length === 5) return String.fromCharCode(parseInt(e.slice(1), 16));
    return ({ f: '\f', n: '\n', r: '\r', t: '\t' } as Record<string, string>)[e] ?? e;
  });
}

/**
 * The pattern argument of each regex function call in a FHIRPath expression: its text, or null when the argument is
 * not a plain string literal (a variable, a concatenation, …) and so cannot be judged.
 */
export function fhirpathRegexPatterns(expression: string): Array<string | null> {
  const patterns: Array<string | null> = [];
  let i = 0;
  const skipLiteral = (quote: string): number => {
    let j = i + 1;
    while (j < expression.length && expression[j] !== quote) j += expression[j] === '\\' ? 2 : 1;
    return j + 1;
  };
  while (i < expression.length) {
    const c = expression[i]!;
    if (c === "'" || c === '`' || c === '"') {
      i = skipLiteral(c);
      continue;
    }
    if (expression.startsWith('//', i)) {
      const end = expression.indexOf('\n', i);
      i = end < 0 ? expression.length : end;
      continue;
    }
    if (expression.startsWith('/*', i)) {
      const end = expression.indexOf('*/', i + 2);
      i = end < 0 ? expression.length : end + 2;
      continue;
    }
    const word = /^[A-Za-z_][A-Za-z0-9_]*/.exec(expression.slice(i))?.[0];
    if (!word) {
      i++;
      continue;
    }
    i += word.length;
    const call = /^\s*\(\s*/.exec(expression.slice(i));
    if (!REGEX_FUNCTIONS.has(word) || !call) continue;
    i += call[0].length;
    if (expression[i] !== "'") {
      patterns.push(null);
      continue;
    }
    const start = i;
    i = skipLiteral("'");
    const after = /^\s*([,)])/.exec(expression.slice(i));
    patterns.push(after ? unescapeLiteral(expression.slice(start + 1, i - 1)) : null);
  }
  return patterns;
}

/** Why the page should not evaluate this FHIRPath expression itself, or undefined when it may. */
export function pageRisk(expression: string): string | undefined {
  for (const pattern of fhirpathRegexPatterns(expression)) {
    if (pattern === null) return 'its regular expression is not a literal the server can judge';
    const risk = regexBacktrackRisk(pattern);
    if (risk) return `its regular expression /${pattern}/ may backtrack without end: ${risk}`;
  }
  return undefined;
}

const variablesUsed = (expression: string): string[] =>
  [...expression.matchAll(/%(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*))/g)].map((m) => m[1] ?? m[2]!);

/**
 * The questionnaire as the page gets it: every expression the page could not run safely taken out, each listed with
 * its reason. The questionnaire given is not changed.
 */
export function pageQuestionnaire<T extends object>(
  questionnaire: T,
): { questionnaire: T; serverOnly: ServerOnlyRule[] } {
  const serverOnly: ServerOnlyRule[] = [];
  const leftOut = new Set<string>();
  const copy = structuredClone(questionnaire) as T & Node;
  const nodes: Array<{ node: Node; linkId?: string }> = [];
  const collect = (node: Node, linkId: string | undefined) => {
    nodes.push({ node, ...(linkId !== undefined ? { linkId } : {}) });
    for (const child of Array.isArray(node.item) ? (node.item as Node[]) : [])
      if (child && typeof child === 'object')
        collect(child, typeof child.linkId === 'string' ? child.linkId : undefined);
  };
  collect(copy, undefined);
  // Until nothing changes: an expression using a variable left to the server is left to the server too.
  for (let changed = true; changed;) {
    changed = false;
    for (const { node, linkId } of nodes) {
      if (!Array.isArray(node.extension)) continue;
      const kept = (node.extension as Extension[]).filter((extension) => {
        const kind = typeof extension?.url === 'string' ? expressionKindOf(extension.url) : undefined;
        const expression = extension?.valueExpression?.expression;
        const language = extension?.valueExpression?.language;
        if (!kind || typeof expression !== 'string' || language !== 'text/fhirpath') return true;
        const variable = variablesUsed(expression).find((v) => leftOut.has(v));
        const reason =
          pageRisk(expression) ?? (variable ? `it uses %${variable}, which the server evaluates` : undefined);
        if (!reason) return true;
        // A variable left out is named, so that what uses it is left out too.
        const name = kind === 'variable' ? extension.valueExpression?.name : undefined;
        if (typeof name === 'string') leftOut.add(name);
        serverOnly.push({ ...(linkId ? { linkId } : {}), kind, ...(typeof name === 'string' ? { name } : {}), reason });
        changed = true;
        return false;
      });
      node.extension = kept;
    }
  }
  return { questionnaire: copy, serverOnly };
}
