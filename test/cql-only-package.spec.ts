import path from 'node:path';
import { compileCqlOnlyLibraries, type FhirResource, isCompiledFromCql, QuestionnairePackage } from '@dtr/fhir';
import { loadPackageFromPath, resourcesOf, validatePackage } from '@dtr/payer';
import { BundleReader, PrefillEngine } from '@dtr/prefill';
import { describe, expect, it } from 'vitest';
import { generatePatients } from '../apps/sandbox/src/ehr/patients/generator.js';

const FIXTURE = path.resolve(import.meta.dirname, '../apps/sandbox/fixtures/packages/home-oxygen-example');

/** Our own fixture package with its Library's ELM removed: what a payer that ships CQL only sends. */
function cqlOnly(resources: FhirResource[], cql?: string): FhirResource[] {
  return resources.map((r) => {
    if (r.resourceType !== 'Library') return r;
    const content = (r['content'] as Array<{ contentType: string; data: string }>).filter(
      (c) => c.contentType === 'text/cql',
    );
    return { ...r, content: cql ? [{ contentType: 'text/cql', data: Buffer.from(cql).toString('base64') }] : content };
  });
}

describe('a package whose library ships CQL only', () => {
  const shipped = resourcesOf(loadPackageFromPath(FIXTURE));

  it('is compiled in-process to the ELM the shipped package carries, flagged as compiled here', async () => {
    const { resources, issues } = await compileCqlOnlyLibraries(cqlOnly(shipped));
    expect(issues).toEqual([]);
    const compiled = QuestionnairePackage.fromResources(resources).libraries.find(
      (l) => l.name === 'HomeOxygenExample',
    )!;
    const original = QuestionnairePackage.fromResources(shipped).libraries.find((l) => l.name === 'HomeOxygenExample')!;
    expect(isCompiledFromCql(compiled.resource)).toBe(true);
    expect(compiled.elm?.library.identifier).toEqual(original.elm?.library.identifier);
    expect(compiled.elm?.library.statements?.def?.map((d) => d.name)).toEqual(
      original.elm?.library.statements?.def?.map((d) => d.name),
    );
    const validation = validatePackage(QuestionnairePackage.fromResources(resources));
    expect(validation).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          severity: 'information',
          code: 'compiled-from-cql',
          library: 'HomeOxygenExample|1.0.0',
        }),
      ]),
    );
    expect(validation.filter((i) => i.severity === 'error')).toEqual([]);
  });

  it('prefills the same answers as the package with the payer-compiled ELM', async () => {
    const patientData = generatePatients({ seed: 11, count: 3 }) as unknown as FhirResource[];
    const withElm = QuestionnairePackage.fromResources(shipped);
    const compiled = QuestionnairePackage.fromResources((await compileCqlOnlyLibraries(cqlOnly(shipped))).resources);
    for (const patient of patientData.filter((r) => r.resourceType === 'Patient')) {
      const run = (pkg: QuestionnairePackage) =>
        new PrefillEngine(new BundleReader(patientData)).runAll({
          pkg,
          questionnaires: pkg.questionnaires,
          patientId: patient.id!,
          igVersion: '2.2',
          now: new Date('2026-11-22T12:00:00Z'),
        });
      const [a, b] = [await run(withElm), await run(compiled)];
      expect(b.map((r) => r.questionnaireResponse)).toEqual(a.map((r) => r.questionnaireResponse));
      expect(JSON.stringify(b[0]!.questionnaireResponse)).toContain('auto-client');
    }
  });

  it('names the library and the translator message when the CQL does not translate, and leaves other content alone', async () => {
    const broken =
      "library HomeOxygenExample version '1.0.0'\nusing FHIR version '4.0.1'\ncontext Patient\ndefine \"Bad\": [Conditoin] C where C.nothing = 1\n";
    const { resources, issues } = await compileCqlOnlyLibraries(cqlOnly(shipped, broken));
    expect(issues).toEqual([
      expect.objectContaining({
        severity: 'error',
        code: 'cql-compile-failed',
        library: 'HomeOxygenExample|1.0.0',
        message: expect.stringMatching(/Conditoin/),
      }),
    ]);
    expect(resources.filter((r) => r.resourceType !== 'Library')).toEqual(
      shipped.filter((r) => r.resourceType !== 'Library'),
    );
  });

  it('uses the translation it is given, and does not translate a library larger than the size cap', async () => {
    const asked: string[] = [];
    const translate = async (text: string) => {
      asked.push(text);
      return { errors: ['the given translation answered'] };
    };
    const given = await compileCqlOnlyLibraries(cqlOnly(shipped), { translate });
    expect(asked).toEqual([expect.stringContaining('library HomeOxygenExample')]);
    expect(given.issues).toEqual([
      expect.objectContaining({ code: 'cql-compile-failed', message: expect.stringMatching(/the given translation/) }),
    ]);
    const capped = await compileCqlOnlyLibraries(cqlOnly(shipped), { translate, maxCqlBytes: 64 });
    expect(asked).toHaveLength(1);
    expect(capped.resources).toEqual(cqlOnly(shipped));
    expect(capped.issues).toEqual([
      expect.objectContaining({
        severity: 'error',
        code: 'cql-compile-failed',
        library: 'HomeOxygenExample|1.0.0',
        message: expect.stringMatching(/its CQL \(\d+ bytes\) is larger than the 64 bytes this server compiles/),
      }),
    ]);
  });

  it('returns the resources untouched, with no issue, when every library ships ELM', async () => {
    const { resources, issues } = await compileCqlOnlyLibraries(shipped);
    expect(resources).toBe(shipped);
    expect(issues).toEqual([]);
  });
});
