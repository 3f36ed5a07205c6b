import path from 'node:path';
import type { FhirResource } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { corpusPath, haveCorpus, NEEDS_CORPUS } from '../../../../test/support/corpus.js';
import { loadPackageFromPath, parsePackageResponse, resourcesOf } from './package-response.js';
import { parseCqlIdentifier, parseCqlReference } from '@dtr/fhir';
import { isUsable, validatePackage } from './package-validator.js';
import { QuestionnairePackage } from '@dtr/fhir';

const b64 = (value: unknown) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64');

function elmLibrary(
  id: string,
  version: string,
  defines: string[],
  includes: Array<[string, string]> = [],
  valueSets: string[] = [],
) {
  return {
    library: {
      identifier: { id, version },
      usings: { def: [{ localIdentifier: 'FHIR', uri: 'http://hl7.org/fhir', version: '4.0.1' }] },
      includes: { def: includes.map(([path, v]) => ({ localIdentifier: path, path, version: v })) },
      valueSets: { def: valueSets.map((url, i) => ({ name: `vs${i}`, id: url })) },
      statements: { def: defines.map((name) => ({ name })) },
    },
  };
}

function library(url: string | undefined, version: string, elm?: unknown, cql?: string): FhirResource {
  return {
    resourceType: 'Library',
    ...(url ? { url } : {}),
    version,
    name: url?.split('/').pop() ?? 'Helpers',
    content: [
      ...(cql ? [{ contentType: 'text/cql', data: b64(cql) }] : []),
      ...(elm ? [{ contentType: 'application/elm+json', data: b64(elm) }] : []),
    ],
  };
}

const questionnaire = (libraries: string[], expressions: Array<[string, string, string?]>): FhirResource => ({
  resourceType: 'Questionnaire',
  url: 'http://payer.example.org/Questionnaire/o2',
  version: '1',
  extension: libraries.map((valueCanonical) => ({
    url: 'http://hl7.org/fhir/StructureDefinition/cqf-library',
    valueCanonical,
  })),
  item: expressions.map(([linkId, expression, language], i) => ({
    linkId,
    type: 'string',
    extension: [
      {
        url:
          i === 0
            ? 'hhttp://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression'
            : 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
        valueExpression: { language: language ?? 'text/cql', expression },
      },
    ],
  })),
});

describe('parseCqlReference', () => {
  it('reads the forms real content uses', () => {
    expect(parseCqlReference('"BasicPatientInfoPrepopulation".LastName')).toEqual({
      library: 'BasicPatientInfoPrepopulation',
      define: 'LastName',
    });
    expect(parseCqlReference('Lib."Has Oxygen"')).toEqual({ library: 'Lib', define: 'Has Oxygen' });
    expect(parseCqlReference('Today')).toEqual({ define: 'Today' });
    expect(parseCqlReference('Count([Observation])')).toBeUndefined();
    expect(parseCqlReference('True')).toBeUndefined();
  });

  it('reads a text/cql-identifier as one define name, spaces and quotes allowed', () => {
    expect(parseCqlIdentifier('Gender Code')).toEqual({ define: 'Gender Code' });
    expect(parseCqlIdentifier(' "Gender Code" ')).toEqual({ define: 'Gender Code' });
    expect(parseCqlIdentifier('Lib."Gender Code"')).toEqual({ library: 'Lib', define: 'Gender Code' });
    expect(parseCqlIdentifier('"a" + "b"')).toBeUndefined();
    expect(parseCqlIdentifier('  ')).toBeUndefined();
    expect(parseCqlIdentifier('null')).toBeUndefined();
  });
});

describe('validatePackage', () => {
  const main = 'http://payer.example.org/Library/O2';
  const good = () => [
    questionnaire(
      [main],
      [
        ['1', '"O2Rules".Saturation'],
        ['2', 'O2Rules.Today'],
      ],
    ),
    library(
      main,
      '1.0.0',
      elmLibrary('O2Rules', '1.0.0', ['Saturation', 'Today'], [['FHIRHelpers', '4.0.1']], ['http://vs.example.org/o2']),
    ),
    library(undefined, '4.0.1', elmLibrary('FHIRHelpers', '4.0.1', ['ToString'])),
    { resourceType: 'ValueSet', url: 'http://vs.example.org/o2', expansion: { contains: [] } },
  ];

  it('accepts a complete package, warning only about a misspelled extension URL', () => {
    const issues = validatePackage(QuestionnairePackage.fromResources(good()));
    expect(issues.map((i) => i.code)).toEqual(['misspelled-extension-url']);
    expect(isUsable(issues)).toBe(true);
  });

  it('names each problem: missing library, unknown define, missing include, missing value set, CQL only', () => {
    const resources = good();
    resources[0] = questionnaire(
      [main, 'http://payer.example.org/Library/Gone|2'],
      [
        ['1', '"O2Rules".Nope'],
        ['2', '"Other".X'],
      ],
    );
    resources[2] = { resourceType: 'Basic' };
    resources[3] = library('http://payer.example.org/Library/CqlOnly', '1', undefined, 'library CqlOnly');
    const issues = validatePackage(QuestionnairePackage.fromResources(resources));
    const codes = issues.map((i) => `${i.severity}:${i.code}`);
    expect(codes).toEqual(
      expect.arrayContaining([
        'error:missing-library',
        'warning:unknown-define',
        'error:unknown-library',
        'error:missing-include',
        'warning:valueset-not-in-package',
      ]),
    );
    expect(issues.find((i) => i.code === 'unknown-define')).toMatchObject({
      linkId: '1',
      define: 'Nope',
      library: 'O2Rules|1.0.0',
    });
    expect(isUsable(issues)).toBe(false);
  });

  it('checks a text/cql-identifier with spaces against the defines, as the engine evaluates it', () => {
    const resources = good();
    resources[0] = questionnaire(
      [main],
      [
        ['1', 'Saturation'],
        ['2', 'Gender Code', 'text/cql-identifier'],
        ['3', 'No Such Define', 'text/cql-identifier'],
        ['4', '"a" + "b"', 'text/cql-identifier'],
      ],
    );
    resources[1] = library(
      main,
      '1.0.0',
      elmLibrary(
        'O2Rules',
        '1.0.0',
        ['Saturation', 'Gender Code'],
        [['FHIRHelpers', '4.0.1']],
        ['http://vs.example.org/o2'],
      ),
    );
    const issues = validatePackage(QuestionnairePackage.fromResources(resources)).filter(
      (i) => i.code !== 'misspelled-extension-url',
    );
    expect(issues.map((i) => [i.code, i.linkId, i.define])).toEqual([
      ['unknown-define', '3', 'No Such Define'],
      ['bad-expression', '4', undefined],
    ]);
  });

  it('flags CQL expressions without any cqf-library, and unreadable inline ELM', () => {
    const issues = validatePackage(
      QuestionnairePackage.fromResources([
        questionnaire(
          [],
          [
            ['1', '"Lib".X'],
            ['2', '{not elm', 'application/elm+json'],
          ],
        ),
      ]),
    );
    expect(issues.map((i) => i.code)).toEqual(expect.arrayContaining(['missing-cqf-library', 'unreadable-inline-elm']));
  });

  it('de-duplicates resources that come in several bundles', () => {
    const pkg = QuestionnairePackage.fromResources([...good(), ...good()]);
    expect(pkg.questionnaires).toHaveLength(1);
    expect(pkg.libraries).toHaveLength(2);
  });
});

describe('parsePackageResponse', () => {
  const bundle = {
    resourceType: 'Bundle',
    type: 'collection',
    entry: [{ resource: { resourceType: 'Questionnaire', id: 'q' } }],
  };
  for (const [name, shape] of [
    ['packagebundle', '2.2'],
    ['PackageBundle', '2.1'],
    ['return', '2.0.1'],
  ] as const) {
    it(`reads the ${shape} shape (${name})`, () => {
      const result = parsePackageResponse({
        resourceType: 'Parameters',
        parameter: [
          { name, resource: bundle },
          { name, resource: bundle },
          { name: 'outcome', resource: { resourceType: 'OperationOutcome', issue: [{ severity: 'warning' }] } },
        ],
      });
      expect(result.shape).toBe(shape);
      expect(result.bundles).toHaveLength(2);
      expect(result.outcomes).toHaveLength(1);
      expect(resourcesOf(result)).toHaveLength(2);
    });
  }

  it('reads a bare Bundle, and refuses anything else clearly', () => {
    expect(parsePackageResponse(bundle).shape).toBe('bundle');
    expect(() => parsePackageResponse({ resourceType: 'Parameters', parameter: [] })).toThrow(/no packagebundle/);
    expect(() => parsePackageResponse({ resourceType: 'Patient' })).toThrow(/not Parameters or Bundle/);
    expect(() => parsePackageResponse('x')).toThrow(/not a FHIR resource/);
  });
});

const corpus = corpusPath('packages');

describe.skipIf(!haveCorpus)(`corpus packages ${NEEDS_CORPUS}`, () => {
  it('HomeOxygenTherapy loads in its original shape and validates (usable; its one bad define named)', () => {
    const response = loadPackageFromPath(path.join(corpus, 'HomeOxygenTherapy', 'original'));
    const pkg = QuestionnairePackage.fromResources(resourcesOf(response));
    expect(pkg.questionnaires).toHaveLength(4);
    expect(pkg.libraries).toHaveLength(7);
    const issues = validatePackage(pkg);
    expect(issues.filter((i) => i.severity === 'error')).toEqual([]);
    // A real content bug: item 3.8 asks for "HomeOxygenTherapyPrepopulation".True, which is not defined.
    expect(issues.find((i) => i.code === 'unknown-define')).toMatchObject({ linkId: '3.8', define: 'True' });
  });

  it('HomeO2-IG-Example yields named issues (missing libraries, missing cqf-library) without a crash', () => {
    const response = loadPackageFromPath(path.join(corpus, 'HomeO2-IG-Example'));
    const issues = validatePackage(QuestionnairePackage.fromResources(resourcesOf(response)));
    expect(issues.map((i) => i.code)).toEqual(expect.arrayContaining(['missing-cqf-library']));
    expect(issues.some((i) => i.code === 'unknown-library' || i.code === 'missing-library')).toBe(true);
    expect(isUsable(issues)).toBe(false);
  });

  it('DinnerOrder loads from its split folders', () => {
    const response = loadPackageFromPath(path.join(corpus, 'DinnerOrder'));
    const pkg = QuestionnairePackage.fromResources(resourcesOf(response));
    expect(pkg.questionnaires.length).toBeGreaterThanOrEqual(2);
    expect(validatePackage(pkg).filter((i) => i.severity === 'error')).toEqual([]);
  });
});
