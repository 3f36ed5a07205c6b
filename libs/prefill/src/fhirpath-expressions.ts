import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import type { FhirResource } from '@dtr/fhir';

type Compiled = (resource: unknown, env?: Record<string, unknown>) => unknown[];

/** Compiled once per process and expression text (packages repeat the same expressions for every patient). */
const compiled = new Map<string, Compiled>();

export function compileFhirPath(expression: string): Compiled {
  let fn = compiled.get(expression);
  if (!fn) {
    fn = fhirpath.compile(expression, r4 as never, { resolveInternalTypes: true }) as unknown as Compiled;
    compiled.set(expression, fn);
  }
  return fn;
}

const LAUNCH_CONTEXT = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-launchContext';
export const VARIABLE = 'http://hl7.org/fhir/StructureDefinition/variable';

/** Names the Questionnaire declares with `launchContext` (patient, encounter, user, …). */
export function launchContextNames(questionnaire: FhirResource): string[] {
  const names: string[] = [];
  for (const ext of (questionnaire['extension'] as
    | Array<{ url?: string; extension?: Array<{ url?: string; valueCoding?: { code?: string }; valueId?: string }> }>
    | undefined) ?? []) {
    if (ext.url !== LAUNCH_CONTEXT) continue;
    const name = ext.extension?.find((e) => e.url === 'name');
    const value = name?.valueCoding?.code ?? name?.valueId;
    if (value) names.push(value);
  }
  return names;
}

/** Root-level `variable` extensions in FHIRPath, in order (each may use the ones before). */
export function rootVariables(questionnaire: FhirResource): Array<{ name: string; expression: string }> {
  const out: Array<{ name: string; expression: string }> = [];
  for (const ext of (questionnaire['extension'] as
    Array<{ url?: string; valueExpression?: { name?: string; language?: string; expression?: string } }> | undefined) ??
    []) {
    const e = ext.valueExpression;
    if (ext.url === VARIABLE && e?.name && e.expression && e.language === 'text/fhirpath')
      out.push({ name: e.name, expression: e.expression });
  }
  return out;
}
