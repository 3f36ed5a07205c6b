import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { compileCqlOnlyLibraries, type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { BundleReader, PatientDataReader } from './patient-data-reader.js';
import { PrefillEngine } from './prefill.engine.js';

const fixtures = path.resolve(import.meta.dirname, '../../../apps/sandbox/fixtures');
const packageDir = path.join(fixtures, 'packages/sdc-features-example');
const pkg = QuestionnairePackage.fromResources(
  readdirSync(packageDir)
    .filter((f) => f.endsWith('.json') && f !== 'rules.json')
    .map((f) => JSON.parse(readFileSync(path.join(packageDir, f), 'utf8')) as FhirResource),
);
const bundle = JSON.parse(readFileSync(path.join(fixtures, 'patients/sdc-grace-okafor.json'), 'utf8')) as {
  entry: Array<{ resource: FhirResource }>;
};
const NOW = new Date('2026-11-22T12:00:00Z');

/** A reader whose searches answer after a random delay, as an EHR's do: completion order changes run to run. */
class SlowReader extends PatientDataReader {
  constructor(
    private readonly inner: PatientDataReader,
    private readonly random: () => number,
  ) {
    super();
  }
  async search(resourceType: string, params: Record<string, string>): Promise<FhirResource[]> {
    await new Promise((r) => setTimeout(r, Math.floor(this.random() * 25)));
    return this.inner.search(resourceType, params);
  }
  async read(resourceType: string, id: string): Promise<FhirResource | undefined> {
    await new Promise((r) => setTimeout(r, Math.floor(this.random() * 10)));
    return this.inner.read(resourceType, id);
  }
}

/** A small seeded generator, so a failing run can be repeated. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

const run = (reader: PatientDataReader, resources = bundle) =>
  new PrefillEngine(reader).run({
    pkg,
    questionnaire: pkg.questionnaires[0]!,
    patientId: 'sdc-grace',
    order: 'DeviceRequest/sdc-dr1',
    coverage: 'Coverage/sdc-cov1',
    igVersion: '2.2',
    now: NOW,
    concurrency: 8,
    ...(resources === bundle ? {} : {}),
  });

describe('prefill answers do not depend on timing', () => {
  it(
    'gives the same response, value and list order, whatever order the searches finish in',
    { timeout: 30_000 },
    async () => {
      const expected = JSON.stringify((await run(BundleReader.fromBundle(bundle))).questionnaireResponse);
      for (let seed = 1; seed <= 12; seed++) {
        const result = await run(new SlowReader(BundleReader.fromBundle(bundle), seeded(seed)));
        expect(JSON.stringify(result.questionnaireResponse), `seed ${seed}`).toBe(expected);
      }
    },
  );
});

describe('input quirks the offline reader and the engine must not trip on', () => {
  it('reads a subject given as Patient/x/_history/n as the patient', async () => {
    const quirky = structuredClone(bundle);
    for (const entry of quirky.entry) {
      const subject = entry.resource['subject'] as { reference?: string } | undefined;
      if (subject?.reference === 'Patient/sdc-grace') subject.reference = 'Patient/sdc-grace/_history/1';
    }
    const plain = await run(BundleReader.fromBundle(bundle));
    const versioned = await run(BundleReader.fromBundle(quirky));
    expect(JSON.stringify(versioned.questionnaireResponse)).toBe(JSON.stringify(plain.questionnaireResponse));
  });
});

/**
 * A package whose one list define reads a value set large enough to be searched in two chunks of codes, so two
 * searches of one type feed one retrieve: the case where completion order used to leak into the list order.
 */
async function chunkedPackage(): Promise<QuestionnairePackage> {
  const cql = `library OrderCheck version '1.0.0'
using FHIR version '4.0.1'
valueset "Oximetry": 'http://example.org/ValueSet/oximetry'
context Patient
define "Reading Ids": [Observation: "Oximetry"] O return O.id.value
define "Reading Count": Count([Observation: "Oximetry"])`;
  const codes = Array.from({ length: 600 }, (_, i) => ({ system: 'http://example.org/codes', code: `c${i + 1}` }));
  const { resources, issues } = await compileCqlOnlyLibraries([
    {
      resourceType: 'Library',
      id: 'OrderCheck',
      url: 'http://example.org/Library/OrderCheck',
      name: 'OrderCheck',
      version: '1.0.0',
      status: 'active',
      content: [{ contentType: 'text/cql', data: Buffer.from(cql).toString('base64') }],
    },
    {
      resourceType: 'ValueSet',
      id: 'oximetry',
      url: 'http://example.org/ValueSet/oximetry',
      status: 'active',
      expansion: { timestamp: '2026-11-01T00:00:00Z', contains: codes },
    },
    {
      resourceType: 'Questionnaire',
      id: 'order-check',
      url: 'http://example.org/Questionnaire/order-check',
      version: '1.0.0',
      status: 'active',
      extension: [
        {
          url: 'http://hl7.org/fhir/StructureDefinition/cqf-library',
          valueCanonical: 'http://example.org/Library/OrderCheck',
        },
      ],
      item: [
        {
          linkId: 'readings',
          text: 'Readings',
          type: 'string',
          repeats: true,
          extension: [
            {
              url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
              valueExpression: { language: 'text/cql', expression: '"OrderCheck"."Reading Ids"' },
            },
          ],
        },
        {
          linkId: 'count',
          text: 'Number of readings',
          type: 'integer',
          extension: [
            {
              url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
              valueExpression: { language: 'text/cql', expression: '"OrderCheck"."Reading Count"' },
            },
          ],
        },
      ],
    },
  ]);
  expect(issues).toEqual([]);
  return QuestionnairePackage.fromResources(resources);
}

const observation = (id: string, code: string) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  subject: { reference: 'Patient/p1' },
  code: { coding: [{ system: 'http://example.org/codes', code }] },
});

describe('several searches of one type feeding one list', () => {
  it('give the same list, in the same order, on every run whatever the search timings', async () => {
    const pkg = await chunkedPackage();
    const patientBundle = {
      entry: [
        { resourceType: 'Patient', id: 'p1', birthDate: '1950-01-01' },
        observation('obs-a', 'c550'),
        observation('obs-b', 'c5'),
        observation('obs-c', 'c520'),
        observation('obs-d', 'c10'),
      ].map((resource) => ({ resource: resource as FhirResource })),
    };
    const readings = async (reader: PatientDataReader) => {
      const result = await new PrefillEngine(reader).run({
        pkg,
        questionnaire: pkg.questionnaires[0]!,
        patientId: 'p1',
        igVersion: '2.2',
        now: NOW,
        concurrency: 4,
      });
      const item = (result.questionnaireResponse['item'] as Array<{ answer?: Array<{ valueString?: string }> }>)[0];
      return (item?.answer ?? []).map((a) => a.valueString);
    };
    const plainReader = BundleReader.fromBundle(patientBundle);
    const expected = await readings(plainReader);
    // Two searches (codes 1-500 and 501-600), and every observation in the list.
    expect(plainReader.searches.filter((s) => s.resourceType === 'Observation')).toHaveLength(2);
    expect([...expected].sort()).toEqual(['obs-a', 'obs-b', 'obs-c', 'obs-d']);
    for (let seed = 1; seed <= 16; seed++)
      expect(
        await readings(new SlowReader(BundleReader.fromBundle(patientBundle), seeded(seed))),
        `seed ${seed}`,
      ).toEqual(expected);
  });
});

describe('resources the bundle allows but an id-keyed store would lose', () => {
  it('uses a resource without an id and both of two different resources sharing an id, and says so', async () => {
    const pkg = await chunkedPackage();
    const { id: _id, ...withoutId } = observation('obs-x', 'c20');
    const patientBundle = {
      entry: [
        { resourceType: 'Patient', id: 'p1' },
        observation('obs-a', 'c550'),
        observation('obs-b', 'c5'),
        observation('obs-b', 'c6'),
        withoutId,
      ].map((resource) => ({ resource: resource as FhirResource })),
    };
    const result = await new PrefillEngine(BundleReader.fromBundle(patientBundle)).run({
      pkg,
      questionnaire: pkg.questionnaires[0]!,
      patientId: 'p1',
      igVersion: '2.2',
      now: NOW,
    });
    const items = result.questionnaireResponse['item'] as Array<{
      linkId: string;
      answer?: Array<{ valueInteger?: number }>;
    }>;
    // As the plain engine over the whole bundle counts them: four observations.
    expect(items.find((i) => i.linkId === 'count')?.answer?.[0]?.valueInteger).toBe(4);
    expect(result.issues.map((i) => i.code)).toEqual(expect.arrayContaining(['resource-without-id', 'duplicate-id']));
  });
});
