import { type ElmLibrary, type FhirResource, type QuestionnairePackage, questionnaireReferences } from '@dtr/fhir';
import { type codeService, expansionOf } from './cql-runtime.js';
import type { DataRequirements, ElmIndex, PlannedSearch } from './elm-requirements.js';
import { PreparedPackage } from './prepared-package.js';

type CompiledLibrary = ReturnType<PreparedPackage['library']>;

/** What evaluation needs of a package (with a questionnaire's inline libraries): PreparedPackage, or the baseline's. */
export interface PackageEvaluation {
  readonly elms: ElmLibrary[];
  readonly index: ElmIndex;
  dataRequirements(
    requested: Array<{ library: string; define: string }>,
    expand: (valueSetUrl: string) => Array<{ system?: string; code: string }> | undefined,
  ): DataRequirements;
  planSearches(requirements: DataRequirements, patientId: string, codeIn: boolean): PlannedSearch[];
  library(id: string, version: string | undefined): CompiledLibrary;
  codeService(): ReturnType<typeof codeService>;
}

/**
 * How the engine goes about a prefill: which expressions a questionnaire names, how the package is prepared, which
 * defines are evaluated and how narrowly the data is read. The engine has one (`MINIMAL`); benchmarks bring their own
 * to compare (see `baseline-strategy.ts`).
 */
export interface PrefillStrategy {
  references(questionnaire: FhirResource): ReturnType<typeof questionnaireReferences>;
  prepare(pkg: QuestionnairePackage, inline: ElmLibrary[]): PackageEvaluation;
  /** The defines to evaluate: those the questionnaire requests (or more). */
  defines(
    requested: Array<{ library: string; define: string }>,
    declared: ElmLibrary[],
  ): Array<{ library: string; define: string }>;
  /** A value set's codes for narrowing retrieves (undefined: the retrieve reads the whole type). */
  expand(pkg: QuestionnairePackage, url: string): Array<{ system?: string; code: string }> | undefined;
  /** The requirements actually fetched. */
  narrow(requirements: DataRequirements): DataRequirements;
  /** Whether `code:in` may be used and unexpanded value sets reported. */
  readonly narrowing: boolean;
}

/**
 * Minimum data: only the referenced defines, retrieves narrowed by code (value sets expanded from the package), the
 * package prepared once (PreparedPackage caches compiled libraries, requirements and search plans).
 */
export const MINIMAL: PrefillStrategy = {
  references: (questionnaire) => PreparedPackage.referencesOf(questionnaire),
  prepare: (pkg, inline) => PreparedPackage.of(pkg).with(inline),
  defines: (requested) => requested,
  expand: (pkg, url) => {
    const vs = pkg.valueSetByUrl(url);
    return vs ? expansionOf(vs) : undefined;
  },
  narrow: (requirements) => requirements,
  narrowing: true,
};
