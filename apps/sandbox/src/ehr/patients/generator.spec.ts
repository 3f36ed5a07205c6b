import { describe, expect, it } from 'vitest';
import { corpusPath, haveCorpus, NEEDS_CORPUS } from '../../../../../test/support/corpus.js';
import { generatePatients, loadBundleFiles } from './generator.js';

describe('generatePatients', () => {
  it('is deterministic from the seed, and different seeds give different patients', () => {
    expect(JSON.stringify(generatePatients({ seed: 7, count: 5 }))).toBe(
      JSON.stringify(generatePatients({ seed: 7, count: 5 })),
    );
    expect(JSON.stringify(generatePatients({ seed: 7, count: 5 }))).not.toBe(
      JSON.stringify(generatePatients({ seed: 8, count: 5 })),
    );
  });

  it('makes US Core shaped, consistent data: every reference resolves, each patient has coverage and an order', () => {
    const resources = generatePatients({ seed: 20261122, count: 6 });
    const keys = new Set(resources.map((r) => `${r.resourceType}/${r.id}`));
    const references: string[] = [];
    const walk = (v: unknown) => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          if (k === 'reference' && typeof x === 'string') references.push(x);
          else walk(x);
        }
      }
    };
    walk(resources);
    expect(references.filter((r) => !keys.has(r))).toEqual([]);
    const patients = resources.filter((r) => r.resourceType === 'Patient');
    expect(patients).toHaveLength(6);
    for (const p of patients) {
      expect((p['identifier'] as Array<{ type: { coding: Array<{ code: string }> } }>)[0]!.type.coding[0]!.code).toBe(
        'MR',
      );
      const mine = (r: (typeof resources)[number]) => JSON.stringify(r).includes(`"Patient/${p.id}"`);
      expect(resources.some((r) => r.resourceType === 'Coverage' && mine(r))).toBe(true);
      expect(
        resources.some(
          (r) => ['DeviceRequest', 'ServiceRequest', 'MedicationRequest'].includes(r.resourceType) && mine(r),
        ),
      ).toBe(true);
    }
  });

  it('labels some resources as sensitive', () => {
    const labelled = generatePatients({ seed: 3, count: 20 }).filter((r) => (r.meta?.security ?? []).length > 0);
    expect(labelled.length).toBeGreaterThan(0);
  });
});

const corpusPatient = corpusPath('patients', 'synthea-uscore-pat85.json');
describe.skipIf(!haveCorpus)(`loadBundleFiles on a corpus patient ${NEEDS_CORPUS}`, () => {
  it('rewrites urn:uuid references to Type/id', () => {
    const resources = loadBundleFiles([corpusPatient]);
    const observation = resources.find((r) => r.resourceType === 'Observation')!;
    expect((observation['subject'] as { reference: string }).reference).toBe('Patient/85');
  });
});
