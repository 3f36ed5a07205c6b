import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PackageStore, sandboxPackageDirs } from './package-store.service.js';

const fixtures = path.resolve(import.meta.dirname, '../../fixtures');
const homeO2 = path.join(fixtures, 'packages/home-oxygen-example');

describe('PackageStore', () => {
  it('assembles a questionnaire with its cqf-library Library and the ValueSets items and libraries use', async () => {
    const store = await PackageStore.load([homeO2]);
    const q = store.resolve('Questionnaire', 'http://example.org/dtr/Questionnaire/home-oxygen|1.0.0');
    expect(q).toBeDefined();
    const pkg = store.packageFor(q!);
    expect(pkg.map((r) => `${r.resourceType}/${r.id}`)).toEqual([
      'Questionnaire/home-oxygen',
      'Library/HomeOxygenExample',
      'ValueSet/home-oxygen-delivery-system',
      'ValueSet/home-oxygen-qualifying-conditions',
    ]);
  });

  it('follows Library depends-on transitively and loads resources from Bundles', async () => {
    const store = new PackageStore();
    store.add({
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        {
          resource: {
            resourceType: 'Questionnaire',
            url: 'http://x/Questionnaire/q',
            version: '1',
            extension: [
              { url: 'http://hl7.org/fhir/StructureDefinition/cqf-library', valueCanonical: 'http://x/Library/A' },
            ],
          },
        },
        {
          resource: {
            resourceType: 'Library',
            url: 'http://x/Library/A',
            relatedArtifact: [{ type: 'depends-on', resource: 'http://x/Library/B|2' }],
          },
        },
        {
          resource: {
            resourceType: 'Library',
            url: 'http://x/Library/B',
            version: '2',
            relatedArtifact: [{ type: 'depends-on', resource: 'http://x/Library/A' }],
          },
        },
      ],
    });
    const pkg = store.packageFor(store.resolve('Questionnaire', 'http://x/Questionnaire/q')!);
    expect(pkg.map((r) => r.url)).toEqual(['http://x/Questionnaire/q', 'http://x/Library/A', 'http://x/Library/B']);
  });

  it('maps order codes to questionnaires through rules.json', async () => {
    const store = await PackageStore.load([path.join(fixtures, 'packages')]);
    expect(
      store.questionnairesForCodes([
        { system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: 'E0424' },
      ]),
    ).toEqual(['http://example.org/dtr/Questionnaire/home-oxygen|1.0.0']);
    expect(store.questionnairesForCodes([{ system: 'http://other', code: 'E0424' }])).toEqual([]);
  });

  it('expands a compose-only ValueSet and knows nothing of unknown ones', async () => {
    const store = await PackageStore.load([homeO2]);
    const vs = store.expand('http://example.org/dtr/ValueSet/home-oxygen-delivery-system') as unknown as {
      expansion: { contains: unknown[] };
    };
    expect(vs.expansion.contains).toHaveLength(4);
    expect(store.expand('http://example.org/none')).toBeUndefined();
  });

  it('ships the Library with the CQL and the ELM compiled from it by scripts/compile-cql.mjs', async () => {
    const lib = JSON.parse(await readFile(path.join(homeO2, 'Library-HomeOxygenExample.json'), 'utf8')) as {
      content: Array<{ contentType: string; data: string }>;
    };
    const data = (type: string) =>
      Buffer.from(lib.content.find((c) => c.contentType === type)!.data, 'base64').toString('utf8');
    expect(data('text/cql')).toBe(await readFile(path.join(fixtures, 'cql/HomeOxygenExample.cql'), 'utf8'));
    expect(data('application/elm+json')).toBe(
      await readFile(path.join(fixtures, 'cql/HomeOxygenExample.json'), 'utf8'),
    );
    const elm = JSON.parse(data('application/elm+json')) as {
      library: { identifier: { id: string }; statements: { def: Array<{ name: string }> } };
    };
    expect(elm.library.identifier.id).toBe('HomeOxygenExample');
    expect(elm.library.statements.def.map((d) => d.name)).toContain('Has Qualifying Condition');
  });
});

describe('sandboxPackageDirs', () => {
  it('always lists our fixtures and adds the shared corpus folders when present', async () => {
    const dirs = await sandboxPackageDirs();
    expect(dirs.slice(0, 2).map((d) => path.basename(d))).toEqual(['home-oxygen-example', 'adaptive-example']);
    const store = await PackageStore.load(dirs);
    expect(store.questionnaires().length).toBeGreaterThanOrEqual(dirs.length > 2 ? 3 : 2);
    for (const q of store.questionnaires()) expect(store.packageFor(q)[0]).toBe(q);
  });
});
