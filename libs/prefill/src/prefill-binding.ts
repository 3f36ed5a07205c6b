import {
  bindExpression,
  type ElmLibrary,
  type PackageLibrary,
  type QuestionnairePackage,
  type questionnaireReferences,
} from '@dtr/fhir';
import { inlineCql, inlineElm } from './inline-expressions.js';
import type { PrefillIssue } from './prefill.types.js';

/** Expression kinds whose CQL the engine evaluates (FHIRPath ones are evaluated at assembly). */
const EVALUATED = new Set([
  'initialExpression',
  'cqf-expression',
  'calculatedExpression',
  'candidateExpression',
  'contextExpression',
  'itemPopulationContext',
]);

/** What the questionnaire asks of CQL: per item and expression kind the define that answers it. */
export interface Bindings {
  refs: ReturnType<typeof questionnaireReferences>;
  declared: PackageLibrary[];
  /** `${kind}|${linkId}` → the define (of a package library, or of an inline expression's own library). */
  cqlByKey: Map<string, { library: string; define: string }>;
  inlineElms: ElmLibrary[];
  requested: Array<{ library: string; define: string }>;
  issues: PrefillIssue[];
}

interface InlineExpression {
  key: string;
  kind: string;
  linkId: string;
  language: string;
  expression: string;
}

/**
 * Binds every evaluated expression of the questionnaire with the binder the package validator uses (so both report a
 * situation with the same code), then compiles the inline ones (ELM, CQL text) into libraries of their own.
 */
export async function bindQuestionnaire(
  pkg: QuestionnairePackage,
  refs: ReturnType<typeof questionnaireReferences>,
): Promise<Bindings> {
  const issues: PrefillIssue[] = [];
  const declared: PackageLibrary[] = [];
  for (const canonical of refs.libraries) {
    const library = pkg.libraryByCanonical(canonical);
    if (library) declared.push(library);
    else
      issues.push({
        severity: 'error',
        code: 'missing-library',
        message: `cqf-library ${canonical} is not in the package`,
        library: canonical,
      });
  }
  const cqlByKey = new Map<string, { library: string; define: string }>();
  const inline: InlineExpression[] = [];
  const requested: Array<{ library: string; define: string }> = [];
  const unknownLibraries = new Map<string, string[]>();
  let cqlItems = 0;
  for (const ref of refs.expressions) {
    if (!ref.linkId || !EVALUATED.has(ref.kind)) continue;
    const key = `${ref.kind}|${ref.linkId}`;
    if (cqlByKey.has(key) || inline.some((i) => i.key === key)) continue;
    if (ref.language === 'text/cql' || ref.language === 'text/cql-identifier') cqlItems++;
    const binding = bindExpression(ref, pkg, declared);
    if (binding.kind === 'fhirpath') continue;
    if (binding.kind === 'inline') {
      inline.push({ key, kind: ref.kind, linkId: ref.linkId, language: ref.language, expression: ref.expression });
    } else if (binding.kind === 'define') {
      cqlByKey.set(key, { library: binding.libraryId, define: binding.define });
      if (!requested.some((r) => r.library === binding.libraryId && r.define === binding.define))
        requested.push({ library: binding.libraryId, define: binding.define });
    } else if (binding.issue.code === 'unknown-library' && binding.issue.library) {
      // Reported once per library below, naming the items it leaves for the clinician.
      const items = unknownLibraries.get(binding.issue.library) ?? [];
      items.push(ref.linkId);
      unknownLibraries.set(binding.issue.library, items);
    } else if (binding.issue.code !== 'missing-cqf-library') {
      // (A define named with no library declared is reported once below, for the questionnaire.)
      issues.push(binding.issue);
    }
  }
  const inlineElms = await compileInline(inline, declared, pkg, cqlByKey, requested, issues);
  if (declared.length === 0 && cqlItems > 0) {
    issues.push({
      severity: 'error',
      code: 'missing-cqf-library',
      message: `the questionnaire has CQL expressions on ${cqlItems} item(s) but names no library (cqf-library extension); those items are left for the clinician`,
    });
  }
  for (const [library, linkIds] of unknownLibraries) {
    issues.push({
      severity: 'error',
      code: 'unknown-library',
      message: `library ${library} is not in the package; ${linkIds.length} item(s) left for the clinician: ${linkIds.slice(0, 8).join(', ')}${linkIds.length > 8 ? ', …' : ''}`,
      library,
    });
  }
  return { refs, declared, cqlByKey, inlineElms, requested, issues };
}

/** Inline expressions compiled once each into libraries evaluated with the package's. */
async function compileInline(
  inline: InlineExpression[],
  declared: PackageLibrary[],
  pkg: QuestionnairePackage,
  cqlByKey: Bindings['cqlByKey'],
  requested: Bindings['requested'],
  issues: PrefillIssue[],
): Promise<ElmLibrary[]> {
  const inlineElms: ElmLibrary[] = [];
  for (const expression of inline) {
    try {
      const compiled =
        expression.language === 'application/elm+json'
          ? await inlineElm(expression.expression)
          : await inlineCql(expression.expression, declared, pkg.libraries);
      const id = compiled.elm.library.identifier.id;
      if (!inlineElms.some((e) => e.library.identifier.id === id)) inlineElms.push(compiled.elm);
      cqlByKey.set(expression.key, { library: id, define: compiled.define });
      if (!requested.some((r) => r.library === id && r.define === compiled.define))
        requested.push({ library: id, define: compiled.define });
    } catch (error) {
      issues.push({
        severity: 'warning',
        code: 'expression-failed',
        message: `${expression.kind} (${expression.language}) could not be compiled: ${error instanceof Error ? error.message.slice(0, 200) : 'error'}`,
        linkId: expression.linkId,
      });
    }
  }
  return inlineElms;
}

/** The declared libraries' ELM (for strategies that evaluate more than the requested defines). */
export const declaredElms = (declared: PackageLibrary[]): ElmLibrary[] =>
  declared.map((d) => d.elm).filter((e): e is ElmLibrary => Boolean(e));
