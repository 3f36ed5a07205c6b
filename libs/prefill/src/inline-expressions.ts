import { createHash } from 'node:crypto';
import { type ElmLibrary, type PackageLibrary, translateCql } from '@dtr/fhir';

/**
 * Expressions written in the questionnaire itself rather than as a reference to a library define:
 * - `application/elm+json`: an ELM library in the expression (its first expression define is the value);
 * - `text/cql-expression` (and `text/cql` text that is not a define reference): a CQL expression, compiled here into a
 *   small library that includes the questionnaire's libraries, so it can use their defines and FHIRHelpers.
 * Each becomes an ELM library the engine evaluates like the package's own; compiled once per expression text and
 * set of libraries (kept for the process), so a package's inline expressions cost a compile only the first time.
 */
export interface InlineLibrary {
  elm: ElmLibrary;
  define: string;
}

const MAX_CACHED = 500;
const cache = new Map<string, Promise<InlineLibrary>>();

function remember(key: string, make: () => Promise<InlineLibrary>): Promise<InlineLibrary> {
  let found = cache.get(key);
  if (!found) {
    if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
    found = make();
    cache.set(key, found);
  }
  return found;
}

const hash = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);

interface ElmStatement {
  name: string;
  type?: string;
}

/** An inline ELM library; one without an identifier gets one from its content. */
export function inlineElm(expression: string): Promise<InlineLibrary> {
  return remember(`elm\u0000${expression}`, async () => {
    let parsed: { library?: ElmLibrary['library'] & { identifier?: { id?: string; version?: string } } };
    try {
      parsed = JSON.parse(expression) as typeof parsed;
    } catch {
      throw new Error('the application/elm+json expression is not JSON');
    }
    const library = parsed?.library;
    if (!library || typeof library !== 'object')
      throw new Error('the application/elm+json expression has no ELM library');
    const statements = ((library.statements?.def ?? []) as ElmStatement[]).filter(
      (s) => s.type !== 'FunctionDef' && s.name !== 'Patient',
    );
    if (statements.length === 0) throw new Error('the ELM library defines no expression');
    const identifier = library.identifier?.id
      ? library.identifier
      : { id: `DtrInlineElm_${hash(expression)}`, version: '0' };
    return { elm: { library: { ...library, identifier } } as ElmLibrary, define: statements[0]!.name };
  });
}

/** A CQL expression compiled into a library that includes the questionnaire's libraries shipping CQL source. */
export function inlineCql(
  expression: string,
  libraries: PackageLibrary[],
  allLibraries: PackageLibrary[],
): Promise<InlineLibrary> {
  const included = libraries.filter((l) => l.cql && l.elm);
  const key = `cql\u0000${expression}\u0000${included.map((l) => `${l.elm!.library.identifier.id}|${l.elm!.library.identifier.version ?? ''}`).join(',')}`;
  return remember(key, async () => {
    const id = `DtrInlineCql_${hash(key)}`;
    const usesFhirHelpers = allLibraries.some((l) => l.cql && l.elm?.library.identifier.id === 'FHIRHelpers');
    const includeLines = included
      .filter((l) => l.elm!.library.identifier.id !== 'FHIRHelpers')
      .map(
        (l) =>
          `include "${l.elm!.library.identifier.id}"${l.elm!.library.identifier.version ? ` version '${l.elm!.library.identifier.version}'` : ''}`,
      );
    const helpers = allLibraries.find((l) => l.cql && l.elm?.library.identifier.id === 'FHIRHelpers')?.elm?.library
      .identifier.version;
    const text = [
      `library ${id} version '0'`,
      `using FHIR version '4.0.1'`,
      ...(usesFhirHelpers ? [`include FHIRHelpers${helpers ? ` version '${helpers}'` : ''} called FHIRHelpers`] : []),
      ...includeLines,
      'context Patient',
      `define "Value":`,
      `  ${expression}`,
      '',
    ].join('\n');
    const sources = new Map<string, string>();
    for (const l of allLibraries) {
      const name = l.elm?.library.identifier.id ?? l.name;
      if (l.cql && name) sources.set(name, l.cql);
    }
    const translated = await translateCql(text, sources);
    if (!translated.elm)
      throw new Error(`CQL does not compile: ${translated.errors.slice(0, 2).join('; ').slice(0, 300)}`);
    return { elm: JSON.parse(translated.elm) as ElmLibrary, define: 'Value' };
  });
}
