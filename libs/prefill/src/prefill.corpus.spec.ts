import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { BundleReader } from './patient-data-reader.js';
import { PrefillEngine } from './prefill.engine.js';
import { BASELINE, MINIMAL } from './index.js';
import { setEngineFastPaths } from './cql-runtime.js';
import { CORPUS_DIR, CORPUS_PATIENT_FILES, haveCorpus, NEEDS_CORPUS } from '../../../test/support/corpus.js';

const shared = CORPUS_DIR;

function loadFolderResources(folder: string): FhirResource[] {
  const original = path.join(folder, 'original');
  const out: FhirResource[] = [];
  for (const file of readdirSync(original)) {
    const json = JSON.parse(readFileSync(path.join(original, file), 'utf8')) as FhirResource;
    const bundles =
      json.resourceType === 'Parameters'
        ? (json['parameter'] as Array<{ resource: FhirResource }>).map((p) => p.resource)
        : [json];
    for (const b of bundles) {
      if (b.resourceType === 'Bundle')
        for (const e of (b['entry'] as Array<{ resource: FhirResource }>) ?? []) out.push(e.resource);
      else out.push(b);
    }
  }
  return out;
}

describe.skipIf(!haveCorpus)(`prefill on the corpus ${NEEDS_CORPUS}`, () => {
  it('HomeOxygenTherapy on pat015: answers from CQL, origin tagged, minimum searches', async () => {
    const pkg = QuestionnairePackage.fromResources(
      loadFolderResources(path.join(shared, 'packages', 'HomeOxygenTherapy')),
    );
    const bundle = JSON.parse(readFileSync(path.join(shared, 'patients', 'dtr-pat015-inferno.json'), 'utf8'));
    const reader = BundleReader.fromBundle(bundle);
    const questionnaire = pkg.questionnaires.find((q) => q.id === 'HomeOxygenTherapy')!;
    const result = await new PrefillEngine(reader).run({
      pkg,
      questionnaire,
      patientId: 'pat015',
      order: 'DeviceRequest/devreq015',
      igVersion: '2.2',
      now: new Date('2026-11-22T12:00:00Z'),
    });
    const answers = JSON.stringify(result.questionnaireResponse);
    expect(answers).toContain('auto-client');
    expect(result.stats.definesEvaluated).toBeGreaterThan(10);
    // Only patient-scoped searches.
    expect(reader.searches.every((s) => s.params['patient'] === 'pat015')).toBe(true);
    const answerOf = (linkId: string): unknown => {
      const find = (items: Array<Record<string, unknown>> = []): unknown => {
        for (const item of items) {
          if (item['linkId'] === linkId)
            return (item['answer'] as Array<Record<string, unknown>> | undefined)?.map(({ extension: _e, ...a }) => a);
          const inner = find(item['item'] as Array<Record<string, unknown>> | undefined);
          if (inner) return inner;
        }
        return undefined;
      };
      return find(result.questionnaireResponse['item'] as Array<Record<string, unknown>>);
    };
    expect(answerOf('PBD.1')).toEqual([{ valueString: 'Oster' }]);
    expect(answerOf('PBD.4')).toEqual([{ valueDate: '2015-02-23' }]);
    expect(answerOf('PBD.5')).toEqual([{ valueCoding: expect.objectContaining({ code: 'male' }) }]);
    expect(answerOf('3.1.1')).toEqual(
      expect.arrayContaining([{ valueCoding: expect.objectContaining({ code: 'J44.9' }) }]),
    );
    expect(answerOf('5.1')).toEqual([
      { valueString: 'HCPCS E0424 - Stationary Compressed Gaseous Oxygen System, Rental' },
    ]);
    expect(answerOf('SIGPNP.4')).toEqual([{ valueString: '1122334455' }]);
    expect(result.issues.filter((i) => i.code === 'answer-type-mismatch')).toEqual([]);
  });

  it('DinnerOrder static: every answer the expected response marks "auto" is reproduced, value and origin', async () => {
    const folder = path.join(shared, 'packages', 'DinnerOrder');
    const resources = readdirSync(path.join(folder, 'questionnaires'))
      .map((f) => JSON.parse(readFileSync(path.join(folder, 'questionnaires', f), 'utf8')) as FhirResource)
      .concat(
        readdirSync(path.join(folder, 'libraries')).map(
          (f) => JSON.parse(readFileSync(path.join(folder, 'libraries', f), 'utf8')) as FhirResource,
        ),
      );
    const pkg = QuestionnairePackage.fromResources(resources);
    const questionnaire = pkg.questionnaires.find((q) => q['url'] === 'urn:inferno:dtr-test-kit:dinner-order-static')!;
    const bundle = JSON.parse(readFileSync(path.join(shared, 'patients', 'dtr-pat015-inferno.json'), 'utf8'));
    const result = await new PrefillEngine(BundleReader.fromBundle(bundle)).run({
      pkg,
      questionnaire,
      patientId: 'pat015',
      user: 'Practitioner/pra-dinner',
      igVersion: '2.1',
    });
    const expected = JSON.parse(
      readFileSync(path.join(folder, 'expected_QR_dinner_order_static.json'), 'utf8'),
    ) as FhirResource;
    type QRItem = { linkId: string; answer?: Array<Record<string, unknown>>; item?: QRItem[] };
    const flatten = (items: QRItem[] = [], out = new Map<string, QRItem>()) => {
      for (const item of items) {
        out.set(item.linkId, item);
        flatten(item.item, out);
      }
      return out;
    };
    const ours = flatten(result.questionnaireResponse['item'] as QRItem[]);
    const sourceOf = (answer: Record<string, unknown>) =>
      (
        (answer['extension'] as Array<{ extension: Array<{ url: string; valueCode?: string }> }>)[0]!.extension.find(
          (e) => e.url === 'source',
        ) ?? {}
      ).valueCode;
    let compared = 0;
    for (const [linkId, item] of flatten(expected['item'] as QRItem[])) {
      for (const [i, answer] of (item.answer ?? []).entries()) {
        if (sourceOf(answer) !== 'auto') continue;
        compared++;
        const mine = ours.get(linkId)?.answer?.[i];
        expect(mine, `item ${linkId}`).toBeDefined();
        const { extension: _e, ...value } = answer;
        const { extension: _m, ...myValue } = mine!;
        expect(myValue, `item ${linkId}`).toEqual(value);
        expect(sourceOf(mine!)).toBe('auto');
        expect(JSON.stringify(mine!['extension'])).toContain('Practitioner/pra-dinner');
      }
    }
    expect(compared).toBeGreaterThanOrEqual(2);
  });
});

describe.skipIf(!haveCorpus)(
  `the HomeO2-IG-Example negative package (questionnaire without cqf-library, libraries missing) ${NEEDS_CORPUS}`,
  () => {
    it('gives a response for each questionnaire and issues naming the missing cqf-library and each missing library, never an exception', async () => {
      const pkg = QuestionnairePackage.fromResources(
        loadFolderResources(path.join(shared, 'packages', 'HomeO2-IG-Example')),
      );
      const bundle = JSON.parse(readFileSync(path.join(shared, 'patients', 'testehr-hypoxemia.json'), 'utf8'));
      const reader = BundleReader.fromBundle(bundle);
      const patientId = reader.resourcesOfType('Patient')[0]!.id!;
      const results = await new PrefillEngine(reader).runAll({
        pkg,
        questionnaires: pkg.questionnaires,
        patientId,
        igVersion: '2.2',
        now: new Date('2026-11-22T12:00:00Z'),
      });
      expect(results).toHaveLength(pkg.questionnaires.length);
      for (const r of results) expect(r.questionnaireResponse['resourceType']).toBe('QuestionnaireResponse');
      const lab = results[pkg.questionnaires.findIndex((q) => q.id === 'HomeOxygenTherapyLab')]!;
      expect(lab.issues.filter((i) => i.code === 'missing-cqf-library')).toHaveLength(1);
      // A library an item names that the package lacks: `unknown-library`, as the package validator says it.
      const missing = lab.issues
        .filter((i) => i.code === 'unknown-library')
        .map((i) => i.library)
        .sort();
      expect(missing).toEqual([
        'BasicClinicalInfoPrepopulation',
        'BasicPatientInfoPrepopulation',
        'BasicPractitionerInfoPrepopulation',
      ]);
      expect(lab.issues.find((i) => i.library === 'BasicPatientInfoPrepopulation')!.message).toContain('PBD.1');
      // One issue per library, not one per item.
      expect(lab.issues.filter((i) => i.code === 'unknown-library')).toHaveLength(3);
    });
  },
);

describe.skipIf(!haveCorpus)(
  `minimum data and the engine fast paths give the answers of the plain engine over all data ${NEEDS_CORPUS}`,
  () => {
    const pkg = () =>
      QuestionnairePackage.fromResources(loadFolderResources(path.join(shared, 'packages', 'HomeOxygenTherapy')));
    it('the corpus holds exactly the patient files listed for these tests', () => {
      const present = readdirSync(path.join(shared, 'patients'))
        .filter((f) => f.endsWith('.json'))
        .sort();
      expect(present).toEqual([...CORPUS_PATIENT_FILES].sort());
    });
    for (const file of CORPUS_PATIENT_FILES) {
      it(`HomeOxygenTherapy (all questionnaires) on ${file}`, async () => {
        const p = pkg();
        const bundle = JSON.parse(readFileSync(path.join(shared, 'patients', file), 'utf8'));
        const reader = BundleReader.fromBundle(bundle);
        const patientId = reader.resourcesOfType('Patient')[0]!.id!;
        const order = reader
          .resourcesOfType('DeviceRequest')
          .find((r) => String((r['subject'] as { reference?: string })?.reference).endsWith(`Patient/${patientId}`));
        const run = async (fast: boolean) => {
          setEngineFastPaths(fast);
          try {
            if (fast) {
              // All questionnaires in one session: each read, search and define once.
              const results = await new PrefillEngine(BundleReader.fromBundle(bundle)).runAll({
                pkg: p,
                questionnaires: p.questionnaires,
                patientId,
                ...(order ? { order: `DeviceRequest/${order.id}` } : {}),
                igVersion: '2.2',
                now: new Date('2026-11-22T12:00:00Z'),
              });
              return results.map((r) => r.questionnaireResponse);
            }
            const out = [];
            for (const questionnaire of p.questionnaires) {
              // The reference: every define over every resource of the retrieved types, on the plain engine.
              const strategy = fast ? MINIMAL : BASELINE;
              const result = await new PrefillEngine(BundleReader.fromBundle(bundle), strategy).run({
                pkg: p,
                questionnaire,
                patientId,
                ...(order ? { order: `DeviceRequest/${order.id}` } : {}),
                igVersion: '2.2',
                now: new Date('2026-11-22T12:00:00Z'),
              });
              out.push(result.questionnaireResponse);
            }
            return out;
          } finally {
            setEngineFastPaths(true);
          }
        };
        const plain = await run(false);
        const fast = await run(true);
        expect(fast).toEqual(plain);
        expect(JSON.stringify(fast)).toContain('"answer"');
      });
    }
  },
);
