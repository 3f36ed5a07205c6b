import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PayerHttpError } from './fhir.types.js';
import { PackageStore } from './package-store.service.js';
import { parseQuestionnairePackageInput, questionnairePackage } from './questionnaire-package.usecase.js';

const fixtures = path.resolve(import.meta.dirname, '../../fixtures/packages');
const coverage = { resourceType: 'Coverage', id: 'c1' };
const byCode = (code: string) => ({
  resourceType: 'ServiceRequest',
  code: { coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code }] },
});

let store: PackageStore;
beforeAll(async () => {
  store = await PackageStore.load([fixtures]);
});

function input(parameter: unknown[]) {
  return { resourceType: 'Parameters', parameter };
}

describe('parseQuestionnairePackageInput', () => {
  it('requires exactly one coverage in 2.2 and at least one before', () => {
    const two = input([
      { name: 'coverage', resource: coverage },
      { name: 'coverage', resource: coverage },
    ]);
    expect(() => parseQuestionnairePackageInput(two, '2.2')).toThrow(PayerHttpError);
    expect(parseQuestionnairePackageInput(two, '2.1').coverage).toHaveLength(2);
    expect(() => parseQuestionnairePackageInput(input([]), '2.0.1')).toThrow(/coverage is required/);
  });

  it('refuses a body that is not Parameters, a non-Coverage coverage and a bad changedsince', () => {
    expect(() => parseQuestionnairePackageInput({ resourceType: 'Bundle' }, '2.2')).toThrow(PayerHttpError);
    expect(() =>
      parseQuestionnairePackageInput(input([{ name: 'coverage', resource: { resourceType: 'Patient' } }]), '2.2'),
    ).toThrow(PayerHttpError);
    expect(() =>
      parseQuestionnairePackageInput(
        input([
          { name: 'coverage', resource: coverage },
          { name: 'changedsince', valueDateTime: 'yesterday' },
        ]),
        '2.2',
      ),
    ).toThrow(/changedsince/);
  });

  for (const version of ['2.0.1', '2.1', '2.2'] as const) {
    it(`DTR ${version}: changedsince is typed as the input profile types it (instant), strictly`, () => {
      const withSince = (param: Record<string, unknown>) =>
        parseQuestionnairePackageInput(
          input([
            { name: 'coverage', resource: coverage },
            { name: 'changedsince', ...param },
          ]),
          version,
        );
      expect(withSince({ valueInstant: '2026-01-02T03:04:05.678Z' }).changedsince).toBe('2026-01-02T03:04:05.678Z');
      expect(() => withSince({ valueDateTime: '2026-01-02T03:04:05Z' })).toThrow(
        `changedsince must be valueInstant in DTR ${version} (got valueDateTime)`,
      );
      expect(() => withSince({ valueInstant: '2026-01-02' })).toThrow(/not a valid instant/);
      expect(() => withSince({ valueInstant: '2026-01-02T03:04:05' })).toThrow(/not a valid instant/);
    });
  }
});

describe('questionnairePackage output shape', () => {
  const req = () =>
    parseQuestionnairePackageInput(
      input([
        { name: 'coverage', resource: coverage },
        { name: 'order', resource: byCode('E0424') },
        { name: 'order', resource: byCode('E0601') },
      ]),
      '2.1',
    );

  it('2.2: one packagebundle per questionnaire', () => {
    const out = questionnairePackage(store, req(), '2.2');
    expect(out.parameter?.map((p) => p.name)).toEqual(['packagebundle', 'packagebundle']);
  });

  it('2.1: one PackageBundle per questionnaire; adaptive questionnaires come without items', () => {
    const out = questionnairePackage(store, req(), '2.1');
    expect(out.parameter?.map((p) => p.name)).toEqual(['PackageBundle', 'PackageBundle']);
    const firsts = (out.parameter ?? []).map(
      (p) => (p.resource as unknown as { entry: Array<{ resource: Record<string, unknown> }> }).entry[0]?.resource,
    );
    const adaptive = firsts.find((q) => q?.['url'] === 'http://example.org/dtr/Questionnaire/sleep-therapy-adaptive');
    expect(adaptive).toBeDefined();
    expect(
      firsts.find((q) => q?.['url'] === 'http://example.org/dtr/Questionnaire/home-oxygen')?.['item'],
    ).toHaveLength(4);
    expect(adaptive?.['item']).toBeUndefined();
  });

  it('2.0.1: a single return bundle holding everything', () => {
    const out = questionnairePackage(store, req(), '2.0.1');
    expect(out.parameter).toHaveLength(1);
    expect(out.parameter?.[0]?.name).toBe('return');
    expect((out.parameter?.[0]?.resource as unknown as { entry: unknown[] }).entry).toHaveLength(5);
  });

  it('adds an outcome warning when no questionnaire applies', () => {
    const none = parseQuestionnairePackageInput(
      input([
        { name: 'coverage', resource: coverage },
        { name: 'order', resource: byCode('A0001') },
      ]),
      '2.2',
    );
    const out = questionnairePackage(store, none, '2.2');
    expect(out.parameter?.map((p) => p.name)).toEqual(['outcome']);
  });
});
