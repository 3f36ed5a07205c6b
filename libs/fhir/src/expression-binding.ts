import type { Issue } from './issues.js';
import type { PackageLibrary, QuestionnairePackage } from './questionnaire-package.js';
import { type ExpressionRef, parseCqlIdentifier, parseCqlReference } from './questionnaire-expressions.js';

/** What one expression of a Questionnaire is bound to, for the package validator and the prefill engine alike. */
export type ExpressionBinding =
  /** A define of a package library that has ELM: `"Lib".Define`, `Define` in a declared library, a cql-identifier. */
  | { kind: 'define'; library: PackageLibrary; libraryId: string; define: string }
  /** Evaluated by compiling the expression itself: inline ELM, `text/cql-expression`, free `text/cql`. */
  | { kind: 'inline' }
  /** FHIRPath: evaluated by the SDC population, not as CQL. */
  | { kind: 'fhirpath' }
  /** Cannot be evaluated: why, as the one issue both report (the item is left for the clinician). */
  | { kind: 'unbound'; issue: Omit<Issue, 'questionnaire'> };

/**
 * Binds one expression to what evaluates it. A define named without a library is looked up in the Questionnaire's
 * declared libraries (`cqf-library`); a named library must be in the package; the library must ship ELM defining it.
 */
export function bindExpression(
  ref: ExpressionRef,
  pkg: QuestionnairePackage,
  declared: PackageLibrary[],
): ExpressionBinding {
  const where = ref.linkId ? { linkId: ref.linkId } : {};
  if (ref.language === 'text/fhirpath') return { kind: 'fhirpath' };
  if (ref.language === 'application/elm+json' || ref.language === 'text/cql-expression') return { kind: 'inline' };
  if (ref.language !== 'text/cql' && ref.language !== 'text/cql-identifier')
    return {
      kind: 'unbound',
      issue: {
        severity: 'information',
        code: 'expression-not-evaluated',
        message: `${ref.kind} in ${ref.language || 'no language'} is not evaluated; answer by hand`,
        ...where,
      },
    };
  const parsed = ref.language === 'text/cql' ? parseCqlReference(ref.expression) : parseCqlIdentifier(ref.expression);
  if (!parsed) {
    if (ref.language === 'text/cql') return { kind: 'inline' };
    return {
      kind: 'unbound',
      issue: {
        severity: 'error',
        code: 'bad-expression',
        message: `${ref.kind} "${ref.expression.slice(0, 60)}" is not a CQL identifier`,
        ...where,
      },
    };
  }
  const library = parsed.library
    ? pkg.libraryByIdentifier(parsed.library)
    : (declared.find((l) => l.elm?.library.statements?.def?.some((s) => s.name === parsed.define)) ?? declared[0]);
  const named = parsed.library ? { library: parsed.library } : {};
  if (!library)
    return {
      kind: 'unbound',
      issue: parsed.library
        ? {
            severity: 'error',
            code: 'unknown-library',
            message: `${ref.kind} names library ${parsed.library}, which is not in the package`,
            ...named,
            define: parsed.define,
            ...where,
          }
        : {
            severity: 'error',
            code: 'missing-cqf-library',
            message: `${ref.kind} names ${parsed.define} but the Questionnaire declares no library (cqf-library)`,
            define: parsed.define,
            ...where,
          },
    };
  const elm = library.elm;
  const id = elm?.library.identifier;
  const label = id
    ? `${id.id}${id.version ? `|${id.version}` : ''}`
    : `${library.url ?? parsed.library ?? 'the library'}${library.version ? `|${library.version}` : ''}`;
  if (!elm)
    return {
      kind: 'unbound',
      issue: {
        severity: 'warning',
        code: 'library-without-elm',
        message: `${label} ships no ELM; item left for the clinician`,
        library: label,
        define: parsed.define,
        ...where,
      },
    };
  if (!elm.library.statements?.def?.some((s) => s.name === parsed.define))
    return {
      kind: 'unbound',
      issue: {
        severity: 'warning',
        code: 'unknown-define',
        message: `${ref.kind} refers to ${parsed.define}, which ${label} does not define`,
        library: label,
        define: parsed.define,
        ...where,
      },
    };
  return { kind: 'define', library, libraryId: elm.library.identifier.id, define: parsed.define };
}
