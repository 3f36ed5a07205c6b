import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { FhirResource } from './fhir-client.js';
import { libraryOf, type PackageIssue, type PackageLibrary } from './questionnaire-package.js';

/**
 * Payers that ship a Library as CQL only (no application/elm+json) still get their rules run: the CQL is translated
 * to ELM here, in-process, with @cqframework/cql (the CQL reference translator built for JavaScript), and the
 * compiled Library is marked so every later look at it says the ELM is ours, not the payer's.
 */

/** `meta.tag` on a Library whose ELM was compiled here from its CQL. */
const COMPILED_FROM_CQL_TAG = { system: 'urn:dtr-backend:package', code: 'elm-compiled-from-cql' } as const;

// The CQL System model (the translator ships none): the types CQL itself defines.
const SYSTEM_MODEL_INFO = `<?xml version="1.0" encoding="UTF-8"?>
<modelInfo xmlns="urn:hl7-org:elm-modelinfo:r1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" name="System" version="1.0.0" url="urn:hl7-org:elm-types:r1" targetQualifier="system">
   <typeInfo xsi:type="SimpleTypeInfo" name="System.Any"/>
   <typeInfo xsi:type="SimpleTypeInfo" name="System.Boolean" baseType="System.Any"/>
   <typeInfo xsi:type="SimpleTypeInfo" name="System.Integer" baseType="System.Any"/>
   <typeInfo xsi:type="SimpleTypeInfo" name="System.Long" baseType="System.Any"/>
   <typeInfo xsi:type="SimpleTypeInfo" name="System.Decimal" baseType="System.Any"/>
   <typeInfo xsi:type="SimpleTypeInfo" name="System.String" baseType="System.Any"/>
   <typeInfo xsi:type="SimpleTypeInfo" name="System.Date" baseType="System.Any"/>
   <typeInfo xsi:type="SimpleTypeInfo" name="System.DateTime" baseType="System.Any"/>
   <typeInfo xsi:type="SimpleTypeInfo" name="System.Time" baseType="System.Any"/>
   <typeInfo xsi:type="ClassInfo" name="System.Quantity" baseType="System.Any">
      <element name="value" elementType="System.Decimal"/>
      <element name="unit" elementType="System.String"/>
   </typeInfo>
   <typeInfo xsi:type="ClassInfo" name="System.Ratio" baseType="System.Any">
      <element name="numerator" elementType="System.Quantity"/>
      <element name="denominator" elementType="System.Quantity"/>
   </typeInfo>
   <typeInfo xsi:type="ClassInfo" name="System.Code" baseType="System.Any">
      <element name="code" elementType="System.String"/>
      <element name="display" elementType="System.String"/>
      <element name="system" elementType="System.String"/>
      <element name="version" elementType="System.String"/>
   </typeInfo>
   <typeInfo xsi:type="ClassInfo" name="System.Concept" baseType="System.Any">
      <element name="codes">
         <elementTypeSpecifier xsi:type="ListTypeSpecifier" elementType="System.Code"/>
      </element>
      <element name="display" elementType="System.String"/>
   </typeInfo>
   <typeInfo xsi:type="ClassInfo" name="System.Vocabulary" baseType="System.Any">
      <element name="id" elementType="System.String"/>
      <element name="version" elementType="System.String"/>
      <element name="name" elementType="System.String"/>
   </typeInfo>
   <typeInfo xsi:type="ClassInfo" name="System.ValueSet" baseType="System.Vocabulary">
      <element name="codesystems">
         <elementTypeSpecifier xsi:type="ListTypeSpecifier" elementType="System.CodeSystem"/>
      </element>
   </typeInfo>
   <typeInfo xsi:type="ClassInfo" name="System.CodeSystem" baseType="System.Vocabulary"/>
</modelInfo>
`;

type Translator = {
  errors: { asJsReadonlyArrayView(): ArrayLike<{ message?: string }> };
  toJson(): string;
};
interface CqlToElm {
  CqlTranslator: { fromText(text: string, libraryManager: unknown): Translator };
  LibraryManager: new (
    modelManager: unknown,
    a?: unknown,
    b?: unknown,
    ucum?: unknown,
  ) => { librarySourceLoader: { registerProvider(p: unknown): void } };
  ModelManager: new () => { modelInfoLoader: { registerModelInfoProvider(p: unknown): void } };
  createLibrarySourceProvider(f: (name: string) => unknown): unknown;
  createModelInfoProvider(f: (name: string) => unknown): unknown;
  createUcumService(...fns: Array<(...a: unknown[]) => unknown>): unknown;
  stringAsSource(text: string): unknown;
}

let translatorModule: Promise<CqlToElm> | undefined;
let fhirModelInfo: string | undefined;
const require = createRequire(import.meta.url);

function fhirModelInfoXml(): string {
  fhirModelInfo ??= readFileSync(
    path.join(path.dirname(require.resolve('cql-exec-fhir')), 'modelInfos', 'fhir-modelinfo-4.0.1.xml'),
    'utf8',
  );
  return fhirModelInfo;
}

function labelOf(resource: FhirResource): string {
  return `${String(resource['name'] ?? resource.id ?? 'Library')}${typeof resource['version'] === 'string' ? `|${resource['version']}` : ''}`;
}

/**
 * CQL text to ELM JSON with the reference translator (loaded on first use), FHIR 4.0.1 and the System model; included
 * libraries are looked up by name in `sources` (CQL text). Errors are the translator's messages.
 */
export async function translateCql(
  text: string,
  sources: ReadonlyMap<string, string> = new Map(),
): Promise<{ elm?: string; errors: string[] }> {
  translatorModule ??= import('@cqframework/cql/cql-to-elm') as unknown as Promise<CqlToElm>;
  const t = await translatorModule;
  // Unit conversion is not needed to translate; the translator only checks unit strings.
  ucumService ??= t.createUcumService(
    (value) => value,
    () => null,
    (a) => a,
    (a) => a,
  );
  const models = new t.ModelManager();
  models.modelInfoLoader.registerModelInfoProvider(
    t.createModelInfoProvider((name) =>
      name === 'System'
        ? t.stringAsSource(SYSTEM_MODEL_INFO)
        : name === 'FHIR'
          ? t.stringAsSource(fhirModelInfoXml())
          : null,
    ),
  );
  const libraries = new t.LibraryManager(models, undefined, undefined, ucumService);
  libraries.librarySourceLoader.registerProvider(
    t.createLibrarySourceProvider((name) => (sources.has(name) ? t.stringAsSource(sources.get(name)!) : null)),
  );
  // The translator's own logging (kotlin-logging writes to the console and standard output) is not for our users: errors come back as
  // values. Translation is synchronous, so nothing else writes to the console meanwhile.
  const saved = { log: console.log, info: console.info, debug: console.debug };
  const write = process.stdout.write;
  console.log = console.info = console.debug = () => undefined;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    const translator = t.CqlTranslator.fromText(text, libraries);
    const errors = Array.from(translator.errors.asJsReadonlyArrayView()).map((e) => e.message ?? 'error');
    return errors.length > 0 ? { errors } : { elm: translator.toJson(), errors: [] };
  } finally {
    Object.assign(console, saved);
    process.stdout.write = write;
  }
}
let ucumService: unknown;

/** CQL text (and the CQL of libraries it may include, by name) to ELM JSON or the translator's messages. */
export type CqlTranslate = (
  text: string,
  sources: ReadonlyMap<string, string>,
) => Promise<{ elm?: string; errors: string[] }>;

export interface CompileCqlOptions {
  /**
   * The translation to use; by default translateCql on this thread. A server passes one that runs in a worker process
   * with a deadline, so a large library does not block its other requests.
   */
  translate?: CqlTranslate;
  /** A CQL-only library whose CQL is larger than this (UTF-8 bytes) is not compiled: an issue says so. */
  maxCqlBytes?: number;
}

/** The default size cap of a CQL-only library compiled here (1 MiB; the largest payer libraries seen are ~200 KB). */
export const CQL_MAX_BYTES_DEFAULT = 1024 * 1024;

/**
 * The package's resources with every CQL-only Library compiled to ELM (added as application/elm+json content,
 * tagged COMPILED_FROM_CQL_TAG, which the validator reports as `compiled-from-cql`), and a `cql-compile-failed` issue
 * (error) naming the library and the translator's first messages for one that does not translate.
 * A Library whose ELM cannot be read but whose CQL can counts as CQL-only. Includes are looked up among the package's
 * CQL sources by library name. Resources without CQL-only Libraries are
 * returned as they are, without loading the translator.
 */
export async function compileCqlOnlyLibraries(
  resources: FhirResource[],
  options: CompileCqlOptions = {},
): Promise<{ resources: FhirResource[]; issues: PackageIssue[] }> {
  const translate = options.translate ?? translateCql;
  const maxBytes = options.maxCqlBytes ?? CQL_MAX_BYTES_DEFAULT;
  const fits = (cql: string) => Buffer.byteLength(cql, 'utf8') <= maxBytes;
  // The package model's own reading of each Library (decoded CQL, parsed ELM).
  const libraries = resources.filter((r) => r.resourceType === 'Library').map(libraryOf);
  const sources = new Map(
    libraries.filter((l) => l.cql && l.name && fits(l.cql)).map((l) => [l.name!, l.cql!] as const),
  );
  const cqlOnly = libraries.filter((l) => l.cql && !l.elm) as Array<PackageLibrary & { cql: string }>;
  if (cqlOnly.length === 0) return { resources, issues: [] };

  const issues: PackageIssue[] = [];
  const compiled = new Map<FhirResource, FhirResource>();
  for (const library of cqlOnly) {
    const label = labelOf(library.resource);
    if (!fits(library.cql)) {
      issues.push({
        severity: 'error',
        code: 'cql-compile-failed',
        message: `${label} ships CQL only and its CQL (${Buffer.byteLength(library.cql, 'utf8')} bytes) is larger than the ${maxBytes} bytes this server compiles: it was not compiled`,
        library: label,
      });
      continue;
    }
    try {
      const translated = await translate(library.cql, sources);
      if (translated.errors.length > 0) {
        issues.push({
          severity: 'error',
          code: 'cql-compile-failed',
          message: `${label} ships CQL only and it does not translate to ELM: ${translated.errors.slice(0, 3).join('; ').slice(0, 400)}`,
          library: label,
        });
        continue;
      }
      const elm = translated.elm!;
      const meta = (library.resource.meta as { tag?: unknown[] } | undefined) ?? {};
      compiled.set(library.resource, {
        ...library.resource,
        meta: { ...meta, tag: [...((meta.tag as unknown[]) ?? []), { ...COMPILED_FROM_CQL_TAG }] },
        content: [
          ...((library.resource['content'] as unknown[]) ?? []),
          { contentType: 'application/elm+json', data: Buffer.from(elm, 'utf8').toString('base64') },
        ],
      } as FhirResource);
    } catch (error) {
      issues.push({
        severity: 'error',
        code: 'cql-compile-failed',
        message: `${label} ships CQL only and the translator failed: ${error instanceof Error ? error.message.slice(0, 300) : 'error'}`,
        library: label,
      });
    }
  }
  return { resources: resources.map((r) => compiled.get(r) ?? r), issues };
}

/** Whether a Library's ELM was compiled here from its CQL (see compileCqlOnlyLibraries). */
export function isCompiledFromCql(resource: FhirResource): boolean {
  const tags = (resource.meta as { tag?: Array<{ system?: string; code?: string }> } | undefined)?.tag ?? [];
  return tags.some((t) => t.system === COMPILED_FROM_CQL_TAG.system && t.code === COMPILED_FROM_CQL_TAG.code);
}
