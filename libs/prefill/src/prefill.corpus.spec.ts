import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { BundleReader } from './patient-data-reader.js';
import { PrefillEngine } from './prefill.engine.js';

const shared = path.resolve(import.meta.dirname, '../../../../shared/corpus');
const haveCorpus = existsSync(path.join(shared, 'packages'));

function loadFolderResources(folder: string): FhirResource[] {
  const original = path.join(folder, 'original');
  const out: FhirResource[] = [];
  for (const file of readdirSync(original)) {
    const json = JSON.parse(readFileSync(path.join(original, file), 'utf8')) as FhirResource;
    const bundles = json.resourceType === 'Parameters' ? ((json['parameter'] as Array<{ resource: FhirResource }>).map((p) => p.resource)) : [json];
    for (const b of bundles) {
      if (b.resourceType === 'Bundle') for (const e of (b['entry'] as Array<{ resource: FhirResource }>) ?? []) out.push(e.resource);
      else out.push(b);
    }
  }
  return out;
}

describe.skipIf(!haveCorpus)(`prefill on the corpus (${shared})`, () => {
  it('HomeOxygenTherapy on pat015: answers from CQL, origin tagged, minimum searches', async () => {
    const pkg = QuestionnairePackage.fromResources(loadFolderResources(path.join(shared, 'packages', 'HomeOxygenTherapy')));
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
          if (item['linkId'] === linkId) return (item['answer'] as Array<Record<string, unknown>> | undefined)?.map(({ extension: _e, ...a }) => a);
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
    expect(answerOf('3.1.1')).toEqual(expect.arrayContaining([{ valueCoding: expect.objectContaining({ code: 'J44.9' }) }]));
    expect(answerOf('5.1')).toEqual([{ valueString: 'HCPCS E0424 - Stationary Compressed Gaseous Oxygen System, Rental' }]);
    expect(answerOf('SIGPNP.4')).toEqual([{ valueString: '1122334455' }]);
    expect(result.issues.filter((i) => i.code === 'answer-type-mismatch')).toEqual([]);
  });
});
