import { type ElmLibrary, questionnaireReferences } from '@dtr/fhir';
import { codeService, cql } from './cql-runtime.js';
import { dataRequirements, indexLibraries, planSearches } from './elm-requirements.js';
import type { PackageEvaluation, PrefillStrategy } from './prefill-strategy.js';

/**
 * For benchmarks only: how a reference DTR app prefills, to compare against. Every define of every declared library
 * over every resource of the retrieved types (no code narrowing, no `code:in`), the package prepared again on every
 * run (nothing cached), the plain engine.
 */
export const BASELINE: PrefillStrategy = {
  references: (questionnaire) => questionnaireReferences(questionnaire),
  prepare(pkg, inline): PackageEvaluation {
    const elms = [...pkg.libraries.map((l) => l.elm).filter((e): e is ElmLibrary => Boolean(e)), ...inline];
    const index = indexLibraries(elms);
    const repository = new cql.Repository(Object.fromEntries(elms.map((e) => [e.library.identifier.id, e])));
    return {
      elms,
      index,
      dataRequirements: (requested, expand) => dataRequirements(index, requested, expand),
      planSearches: (requirements, patientId, codeIn) =>
        planSearches(requirements.retrieves, patientId, 40, { codeIn }),
      library: (id, version) => {
        try {
          return repository.resolve(id, version) ?? undefined;
        } catch {
          return undefined;
        }
      },
      codeService: () => codeService(pkg.valueSets),
    };
  },
  defines(requested, declared) {
    const all = [...requested];
    for (const elm of declared) {
      const id = elm.library.identifier.id;
      for (const statement of elm.library.statements?.def ?? []) {
        if (
          (statement as { type?: string }).type !== 'FunctionDef' &&
          statement.name !== 'Patient' &&
          !all.some((r) => r.library === id && r.define === statement.name)
        )
          all.push({ library: id, define: statement.name });
      }
    }
    return all;
  },
  expand: () => undefined,
  narrow: (requirements) => ({
    ...requirements,
    retrieves: requirements.retrieves.map((r) => ({ resourceType: r.resourceType })),
  }),
  narrowing: false,
};
