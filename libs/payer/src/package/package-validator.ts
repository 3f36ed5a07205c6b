import {
  type FhirResource,
  type PackageIssue,
  type PackageLibrary,
  bindExpression,
  type QuestionnairePackage,
  questionnaireReferences,
} from '@dtr/fhir';
import { isCompiledFromCql } from '@dtr/fhir';

const SUPPORTED_FHIR_MODELS = new Set(['4.0.0', '4.0.1']);

function libraryLabel(library: PackageLibrary): string {
  const id = library.elm?.library.identifier;
  return id
    ? `${id.id}${id.version ? `|${id.version}` : ''}`
    : `${library.url ?? library.name ?? 'Library'}${library.version ? `|${library.version}` : ''}`;
}

/**
 * Checks that a package can be used: libraries resolvable (canonical → Library → ELM identifier, includes by
 * identifier + version), ELM present (or CQL that can be compiled), every `"Lib".Define` an existing define,
 * ValueSets present or expandable. Returns issues; never throws on bad content.
 */
export function validatePackage(pkg: QuestionnairePackage): PackageIssue[] {
  const issues: PackageIssue[] = [];
  if (pkg.questionnaires.length === 0) {
    issues.push({ severity: 'error', code: 'no-questionnaire', message: 'the package contains no Questionnaire' });
  }
  const used = new Set<PackageLibrary>();
  for (const questionnaire of pkg.questionnaires) checkQuestionnaire(pkg, questionnaire, issues, used);
  // Libraries in use and everything they include.
  const queue = [...used];
  const checked = new Set<PackageLibrary>();
  while (queue.length > 0) {
    const library = queue.shift()!;
    if (checked.has(library)) continue;
    checked.add(library);
    checkLibrary(pkg, library, issues, queue);
  }
  return issues;
}

/** One questionnaire: its extension URLs, declared libraries, and every expression bound as the engine binds it. */
function checkQuestionnaire(
  pkg: QuestionnairePackage,
  questionnaire: FhirResource,
  issues: PackageIssue[],
  used: Set<PackageLibrary>,
): void {
  const q = pkg.questionnaireKey(questionnaire);
  const refs = questionnaireReferences(questionnaire);
  for (const url of new Set(refs.misspelled)) {
    issues.push({
      severity: 'warning',
      code: 'misspelled-extension-url',
      message: `extension URL ${url} is misspelled; read as http://…`,
      questionnaire: q,
    });
  }
  const declared: PackageLibrary[] = [];
  for (const canonical of refs.libraries) {
    const library = pkg.libraryByCanonical(canonical);
    if (!library) {
      issues.push({
        severity: 'error',
        code: 'missing-library',
        message: `cqf-library ${canonical} is not in the package`,
        questionnaire: q,
        library: canonical,
      });
    } else {
      declared.push(library);
    }
  }
  const cqlExpressions = refs.expressions.filter((e) => e.language.startsWith('text/cql'));
  if (cqlExpressions.length > 0 && refs.libraries.length === 0) {
    issues.push({
      severity: 'error',
      code: 'missing-cqf-library',
      message: `${cqlExpressions.length} CQL expression(s) but no cqf-library extension naming their libraries`,
      questionnaire: q,
    });
  }
  for (const ref of refs.expressions) {
    const where = { questionnaire: q, ...(ref.linkId ? { linkId: ref.linkId } : {}) };
    if (ref.language === 'application/elm+json') {
      try {
        const parsed = JSON.parse(ref.expression) as { library?: { identifier?: unknown } };
        if (!parsed.library) throw new Error('no library');
      } catch {
        issues.push({
          severity: 'error',
          code: 'unreadable-inline-elm',
          message: `inline ELM of ${ref.kind} is not an ELM library`,
          ...where,
        });
      }
      continue;
    }
    const binding = bindExpression(ref, pkg, declared);
    if (binding.kind === 'unbound') {
      // Reported once per questionnaire (no cqf-library) or per library (no ELM), not per item.
      if (binding.issue.code !== 'missing-cqf-library' && binding.issue.code !== 'library-without-elm')
        issues.push({ ...binding.issue, ...where });
      const library = binding.issue.library ? pkg.libraryByIdentifier(binding.issue.library.split('|')[0]!) : undefined;
      if (library) used.add(library);
      continue;
    }
    if (binding.kind !== 'define') continue; // inline CQL and FHIRPath are evaluated as they are
    used.add(binding.library);
    if (!declared.includes(binding.library) && refs.libraries.length > 0) {
      issues.push({
        severity: 'warning',
        code: 'library-not-declared',
        message: `${ref.kind} uses ${binding.libraryId}, which the Questionnaire does not list in cqf-library`,
        library: binding.libraryId,
        ...where,
      });
    }
  }
  for (const library of declared) used.add(library);
}

/** One library in use: its content, model version, includes (queued to be checked) and value sets. */
function checkLibrary(
  pkg: QuestionnairePackage,
  library: PackageLibrary,
  issues: PackageIssue[],
  queue: PackageLibrary[],
): void {
  const label = libraryLabel(library);
  const hasElmContent = ((library.resource['content'] as Array<{ contentType?: string }> | undefined) ?? []).some(
    (c) => c.contentType === 'application/elm+json',
  );
  if (!library.elm) {
    if (hasElmContent) {
      issues.push({
        severity: 'error',
        code: 'unreadable-elm',
        message: `${label}: its ELM content cannot be read`,
        library: label,
      });
    } else if (library.cql) {
      issues.push({
        severity: 'warning',
        code: 'cql-only',
        message: `${label} ships CQL only and was not compiled to ELM: its rules are not run`,
        library: label,
      });
    } else {
      issues.push({
        severity: 'error',
        code: 'library-without-content',
        message: `${label} has neither ELM nor CQL`,
        library: label,
      });
    }
    return;
  }
  if (isCompiledFromCql(library.resource)) {
    issues.push({
      severity: 'information',
      code: 'compiled-from-cql',
      message: `${label} ships CQL only; its ELM was compiled here from that CQL`,
      library: label,
    });
  }
  const elm = library.elm.library;
  if (library.version && elm.identifier.version && library.version !== elm.identifier.version) {
    issues.push({
      severity: 'information',
      code: 'version-mismatch',
      message: `Library.version ${library.version} differs from its ELM identifier version ${elm.identifier.version}; the ELM identifier is used`,
      library: label,
    });
  }
  for (const using of elm.usings?.def ?? []) {
    if (using.localIdentifier === 'FHIR' && using.version && !SUPPORTED_FHIR_MODELS.has(using.version)) {
      issues.push({
        severity: 'warning',
        code: 'unsupported-model-version',
        message: `${label} uses FHIR ${using.version}`,
        library: label,
      });
    }
  }
  for (const include of elm.includes?.def ?? []) {
    const target = pkg.libraryByIdentifier(include.path, include.version);
    if (!target) {
      issues.push({
        severity: 'error',
        code: 'missing-include',
        message: `${label} includes ${include.path}${include.version ? `|${include.version}` : ''}, which is not in the package`,
        library: label,
      });
    } else {
      queue.push(target);
    }
  }
  for (const valueSet of elm.valueSets?.def ?? []) {
    if (!pkg.valueSetByUrl(valueSet.id)) {
      issues.push({
        severity: 'warning',
        code: 'valueset-not-in-package',
        message: `${label} uses value set ${valueSet.name} (${valueSet.id}), not in the package: it must be expanded at the payer`,
        library: label,
        valueSet: valueSet.id,
      });
    }
  }
}

/** Whether the package can be used at all (no error-level issue). */
export function isUsable(issues: PackageIssue[]): boolean {
  return !issues.some((i) => i.severity === 'error');
}
