import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { BundleReader } from './patient-data-reader.js';
import { PrefillEngine } from './prefill.engine.js';
import { PrefillSession } from './prefill-session.js';

const FIXTURE = path.resolve(import.meta.dirname, '../../../apps/sandbox/fixtures/packages/home-oxygen-example');
const pkg = QuestionnairePackage.fromResources(
  readdirSync(FIXTURE)
    .filter((f) => f.endsWith('.json') && f !== 'rules.json')
    .map((f) => JSON.parse(readFileSync(path.join(FIXTURE, f), 'utf8')) as FhirResource),
);
const questionnaire = pkg.questionnaires[0]!;
// A second questionnaire naming the same defines, as payers' packages do (order form and face-to-face form).
const sibling = {
  ...structuredClone(questionnaire),
  id: 'home-oxygen-sibling',
  url: `${String(questionnaire['url'])}-sibling`,
};
const patient = {
  resourceType: 'Patient',
  id: 'p1',
  gender: 'female',
  birthDate: '1950-04-02',
  name: [{ family: 'Rivera', given: ['Ana'] }],
};
const condition = {
  resourceType: 'Condition',
  id: 'c1',
  subject: { reference: 'Patient/p1' },
  code: { coding: [{ system: 'http://snomed.info/sct', code: '13645005' }] },
};
const order = {
  resourceType: 'DeviceRequest',
  id: 'o1',
  status: 'active',
  intent: 'order',
  subject: { reference: 'Patient/p1' },
};
const now = new Date('2026-11-22T12:00:00Z');

describe('prefilling several questionnaires in one session', () => {
  it('reads and searches once and evaluates each define once, with the responses of separate prefills', async () => {
    const alone = new BundleReader([patient, condition, order]);
    const separate = [];
    for (const q of [questionnaire, sibling]) {
      separate.push(
        await new PrefillEngine(alone).run({
          pkg,
          questionnaire: q,
          patientId: 'p1',
          order: 'DeviceRequest/o1',
          igVersion: '2.2',
          now,
        }),
      );
    }

    const shared = new BundleReader([patient, condition, order]);
    const together = await new PrefillEngine(shared).runAll({
      pkg,
      questionnaires: [questionnaire, sibling],
      patientId: 'p1',
      order: 'DeviceRequest/o1',
      igVersion: '2.2',
      now,
    });

    expect(together.map((r) => r.questionnaireResponse)).toEqual(separate.map((r) => r.questionnaireResponse));
    expect(JSON.stringify(together[0]!.questionnaireResponse)).toContain('"answer"');
    // The EHR sees half the traffic: the second questionnaire is served from the session.
    expect(alone.searches.length).toBeGreaterThan(0);
    expect(shared.searches.length).toBe(alone.searches.length / 2);
    expect(shared.reads.length).toBe(alone.reads.length / 2);
    expect(together[0]!.stats.definesEvaluated).toBeGreaterThan(0);
    expect(together[1]!.stats.definesEvaluated).toBe(0);
  });

  it('a failed search is reported to every questionnaire that needed it, and made only once', async () => {
    const reader = new BundleReader([patient, condition, order]);
    const failing = Object.assign(Object.create(reader) as BundleReader, {
      search: async (type: string, params: Record<string, string>) => {
        reader.searches.push({ resourceType: type, params });
        throw new Error('EHR unavailable');
      },
    });
    const results = await new PrefillEngine(failing).runAll({
      pkg,
      questionnaires: [questionnaire, sibling],
      patientId: 'p1',
      igVersion: '2.2',
      now,
    });
    for (const result of results) expect(result.issues.map((i) => i.code)).toContain('search-failed');
    const perQuestionnaire = results[0]!.issues.filter((i) => i.code === 'search-failed').length;
    expect(reader.searches.length).toBe(perQuestionnaire);
  });

  it('refuses to serve another patient or launch context', async () => {
    const session = new PrefillSession();
    const engine = new PrefillEngine(new BundleReader([patient, condition, order]));
    await engine.run({ pkg, questionnaire, patientId: 'p1', igVersion: '2.2', now, session });
    await expect(engine.run({ pkg, questionnaire, patientId: 'p2', igVersion: '2.2', now, session })).rejects.toThrow(
      /one package, patient/,
    );
    await expect(
      engine.run({ pkg, questionnaire, patientId: 'p1', order: 'DeviceRequest/o1', igVersion: '2.2', now, session }),
    ).rejects.toThrow(/one package, patient/);
  });
});
