import type { Issue } from './issues.js';
import type { FhirResource } from './fhir-client.js';
import { parseCanonical } from './reference.js';

/** A problem found in a payer's package: shown to the user, reported to the payer (no PHI ever goes in here). */
/** What the package validator reports: the one Issue type (see issues.ts). */
export type PackageIssue = Issue;

interface ElmIdentifier {
  id: string;
  version?: string;
}

/** The parts of an ELM library we read (statements, includes, value sets, parameters, usings). */
export interface ElmLibrary {
  library: {
    identifier: ElmIdentifier;
    usings?: { def?: Array<{ localIdentifier?: string; uri?: string; version?: string }> };
    includes?: { def?: Array<{ localIdentifier?: string; path: string; version?: string }> };
    valueSets?: { def?: Array<{ name: string; id: string; version?: string }> };
    parameters?: { def?: Array<{ name: string }> };
    statements?: { def?: Array<{ name: string; context?: string }> };
  };
}

export interface PackageLibrary {
  resource: FhirResource;
  url?: string;
  version?: string;
  name?: string;
  /** Parsed ELM JSON, when the Library ships it. */
  elm?: ElmLibrary;
  /** CQL source, when the Library ships it. */
  cql?: string;
}

export const CQF_LIBRARY = 'http://hl7.org/fhir/StructureDefinition/cqf-library';
export const CQF_EXPRESSION = 'http://hl7.org/fhir/StructureDefinition/cqf-expression';
export const SDC = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/';

/** Real content misspells some extension URLs (`hhttp://…`): recognise them, and say so. */
export function normaliseExtensionUrl(url: string): { url: string; misspelled: boolean } {
  const fixed = url.replace(/^h+ttp(s?):\/\//, 'http$1://');
  return { url: fixed, misspelled: fixed !== url };
}

function decodeBase64(data: unknown): string | undefined {
  return typeof data === 'string' ? Buffer.from(data, 'base64').toString('utf8') : undefined;
}

export function libraryOf(resource: FhirResource): PackageLibrary {
  const library: PackageLibrary = { resource };
  if (typeof resource['url'] === 'string') library.url = resource['url'] as string;
  if (typeof resource['version'] === 'string') library.version = resource['version'] as string;
  if (typeof resource['name'] === 'string') library.name = resource['name'] as string;
  for (const content of (resource['content'] as Array<{ contentType?: string; data?: string }> | undefined) ?? []) {
    if (content.contentType === 'application/elm+json' && !library.elm) {
      try {
        const parsed = JSON.parse(decodeBase64(content.data) ?? '') as ElmLibrary;
        if (parsed?.library?.identifier?.id) library.elm = parsed;
      } catch {
        // reported by the validator as unreadable ELM
      }
    } else if (content.contentType === 'text/cql' && library.cql === undefined) {
      library.cql = decodeBase64(content.data);
    }
  }
  return library;
}

function key(resource: FhirResource): string {
  const url = typeof resource['url'] === 'string' ? resource['url'] : '';
  const version = typeof resource['version'] === 'string' ? resource['version'] : '';
  return `${resource.resourceType}|${url || resource.id || JSON.stringify(resource).length}|${version}`;
}

/**
 * The content of one or more package Bundles, de-duplicated (the same resource may come in several bundles),
 * with look-ups by canonical and by ELM identifier.
 */
export class QuestionnairePackage {
  readonly questionnaires: FhirResource[] = [];
  readonly libraries: PackageLibrary[] = [];
  readonly valueSets: FhirResource[] = [];
  readonly others: FhirResource[] = [];

  static fromResources(resources: FhirResource[]): QuestionnairePackage {
    const pkg = new QuestionnairePackage();
    const seen = new Set<string>();
    for (const resource of resources) {
      const k = key(resource);
      if (seen.has(k)) continue;
      seen.add(k);
      if (resource.resourceType === 'Questionnaire') pkg.questionnaires.push(resource);
      else if (resource.resourceType === 'Library') pkg.libraries.push(libraryOf(resource));
      else if (resource.resourceType === 'ValueSet') pkg.valueSets.push(resource);
      else pkg.others.push(resource);
    }
    return pkg;
  }

  /** `url` or `url|version`; without a version the newest-looking one wins (highest version string). */
  libraryByCanonical(canonical: string): PackageLibrary | undefined {
    const { url, version } = parseCanonical(canonical);
    const matches = this.libraries.filter((l) => l.url === url && (version === undefined || l.version === version));
    return matches.sort((a, b) => (b.version ?? '').localeCompare(a.version ?? '', undefined, { numeric: true }))[0];
  }

  /** By ELM identifier (what CQL `include` and `"Lib".Define` name); FHIRHelpers often has no `url`. */
  libraryByIdentifier(id: string, version?: string): PackageLibrary | undefined {
    const matches = this.libraries.filter((l) => l.elm?.library.identifier.id === id);
    return (
      matches.find((l) => version === undefined || l.elm?.library.identifier.version === version) ??
      // Fall back to Library.name|version for CQL-only libraries.
      this.libraries.find((l) => !l.elm && l.name === id && (version === undefined || l.version === version))
    );
  }

  valueSetByUrl(url: string): FhirResource | undefined {
    const { url: base, version } = parseCanonical(url);
    return this.valueSets.find((v) => v['url'] === base && (version === undefined || v['version'] === version));
  }

  questionnaireKey(questionnaire: FhirResource): string {
    const url = questionnaire['url'];
    return typeof url === 'string'
      ? `${url}${typeof questionnaire['version'] === 'string' ? `|${questionnaire['version']}` : ''}`
      : `Questionnaire/${questionnaire.id ?? '?'}`;
  }

  /** This package's own copy of a questionnaire (same canonical and version), if it has one. */
  sameQuestionnaire(questionnaire: FhirResource): FhirResource | undefined {
    if (this.questionnaires.includes(questionnaire)) return questionnaire;
    const key = this.questionnaireKey(questionnaire);
    return this.questionnaires.find((q) => this.questionnaireKey(q) === key);
  }

  /** These questionnaires with this package's libraries and value sets (shared, not read again). */
  withQuestionnaires(questionnaires: FhirResource[]): QuestionnairePackage {
    const pkg = new QuestionnairePackage();
    pkg.questionnaires.push(...questionnaires);
    pkg.libraries.push(...this.libraries);
    pkg.valueSets.push(...this.valueSets);
    return pkg;
  }
}
