import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { BASELINE, BundleReader, PatientDataReader, PrefillEngine, setEngineFastPaths } from '@dtr/prefill';
import { describe, expect, it } from 'vitest';
import { generatePatients } from '../apps/sandbox/src/ehr/patients/generator.js';
import { CORPUS_PATIENT_FILES, corpusPath, haveCorpus, NEEDS_CORPUS } from './support/corpus.js';
import { repoRoot } from './support/processes.js';

/**
 * Differential: our engine (minimum data: referenced defines only, narrowed searches, `code:in` or listed codes,
 * searches answering after random delays, the engine's fast paths) against plain cql-execution over every resource of
 * the retrieved types (the baseline strategy, fast paths off). Any difference in a value or in a list's order fails.
 */
const NOW = new Date('2026-11-22T12:00:00Z');
const RUNS = 4;

/** A reader whose searches and reads answer after a seeded random delay: their completion order changes per run. */
class SlowReader extends PatientDataReader {
  private state: number;
  constructor(
    private readonly inner: PatientDataReader,
    seed: number,
  ) {
    super();
    this.state = seed >>> 0;
  }
  private delay(max: number): Promise<void> {
    this.state = (this.state * 1664525 + 1013904223) >>> 0;
    return new Promise((r) => setTimeout(r, Math.floor((this.state / 2 ** 32) * max)));
  }
  async search(resourceType: string, params: Record<string, string>): Promise<FhirResource[]> {
    await this.delay(15);
    return this.inner.search(resourceType, params);
  }
  async read(resourceType: string, id: string): Promise<FhirResource | undefined> {
    await this.delay(5);
    return this.inner.read(resourceType, id);
  }
}

function folderResources(folder: string): FhirResource[] {
  return readdirSync(folder)
    .filter((f) => f.endsWith('.json') && f !== 'rules.json')
    .map((f) => JSON.parse(readFileSync(path.join(folder, f), 'utf8')) as FhirResource);
}

interface Case {
  name: string;
  pkg: QuestionnairePackage;
  resources: FhirResource[];
  patientId: string;
  order?: string;
}

async function differential(c: Case): Promise<void> {
  const request = (questionnaire: FhirResource) => ({
    pkg: c.pkg,
    questionnaire,
    patientId: c.patientId,
    ...(c.order ? { order: c.order } : {}),
    igVersion: '2.2' as const,
    now: NOW,
  });
  setEngineFastPaths(false);
  const reference: unknown[] = [];
  try {
    for (const questionnaire of c.pkg.questionnaires)
      reference.push(
        (await new PrefillEngine(new BundleReader(c.resources), BASELINE).run(request(questionnaire)))
          .questionnaireResponse,
      );
  } finally {
    setEngineFastPaths(true);
  }
  for (let run = 1; run <= RUNS; run++) {
    // Half the runs search value sets with code:in (the reader expands them as an EHR would), half list the codes.
    const codeIn = run % 2 === 0;
    const reader = new SlowReader(new BundleReader(c.resources, codeIn ? { valueSets: c.pkg.valueSets } : {}), run);
    const ours = [];
    for (const questionnaire of c.pkg.questionnaires)
      ours.push(
        (await new PrefillEngine(reader).run({ ...request(questionnaire), codeIn, concurrency: 8 }))
          .questionnaireResponse,
      );
    expect(JSON.stringify(ours), `${c.name}, run ${run}${codeIn ? ' (code:in)' : ''}`).toBe(JSON.stringify(reference));
  }
}

const fixtures = path.join(repoRoot, 'apps/sandbox/fixtures');

describe('differential: minimum data with random latency vs plain cql-execution over all data', () => {
  it('our sdc-features package on our SDC patient', async () => {
    const bundle = JSON.parse(readFileSync(path.join(fixtures, 'patients/sdc-grace-okafor.json'), 'utf8')) as {
      entry: Array<{ resource: FhirResource }>;
    };
    await differential({
      name: 'sdc-features',
      pkg: QuestionnairePackage.fromResources(folderResources(path.join(fixtures, 'packages/sdc-features-example'))),
      resources: bundle.entry.map((e) => e.resource),
      patientId: 'sdc-grace',
      order: 'DeviceRequest/sdc-dr1',
    });
  }, 60_000);

  it('our home-oxygen package on generated patients (some resources labelled, some entered-in-error)', async () => {
    const resources = generatePatients({ seed: 20261205, count: 6 }) as FhirResource[];
    const pkg = QuestionnairePackage.fromResources(
      folderResources(path.join(fixtures, 'packages/home-oxygen-example')),
    );
    for (const patient of resources.filter((r) => r.resourceType === 'Patient'))
      await differential({ name: `home-oxygen ${patient.id}`, pkg, resources, patientId: patient.id! });
  }, 60_000);
});

describe.skipIf(!haveCorpus)(`differential on the corpus HomeOxygenTherapy package ${NEEDS_CORPUS}`, () => {
  const packageResources = (): FhirResource[] => {
    const original = corpusPath('packages', 'HomeOxygenTherapy', 'original');
    return readdirSync(original).flatMap((file) => {
      const json = JSON.parse(readFileSync(path.join(original, file), 'utf8')) as FhirResource;
      const parts =
        json.resourceType === 'Parameters'
          ? (json['parameter'] as Array<{ resource: FhirResource }>).map((p) => p.resource)
          : [json];
      return parts.flatMap((p) =>
        p.resourceType === 'Bundle'
          ? ((p['entry'] as Array<{ resource: FhirResource }>) ?? []).map((e) => e.resource)
          : [p],
      );
    });
  };
  for (const file of CORPUS_PATIENT_FILES) {
    it(`on ${file}`, async () => {
      const bundle = JSON.parse(readFileSync(corpusPath('patients', file), 'utf8'));
      const resources = BundleReader.fromBundle(bundle).all();
      const patientId = resources.find((r) => r.resourceType === 'Patient')!.id!;
      const order = resources.find(
        (r) =>
          r.resourceType === 'DeviceRequest' &&
          String((r['subject'] as { reference?: string })?.reference).endsWith(`Patient/${patientId}`),
      );
      await differential({
        name: file,
        pkg: QuestionnairePackage.fromResources(packageResources()),
        resources,
        patientId,
        ...(order ? { order: `DeviceRequest/${order.id}` } : {}),
      });
    }, 120_000);
  }
});
