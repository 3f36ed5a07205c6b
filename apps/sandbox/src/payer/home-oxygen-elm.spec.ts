import { readFile } from 'node:fs/promises';
import path from 'node:path';
import cql from 'cql-execution';
import cqlfhir from 'cql-exec-fhir';
import { describe, expect, it } from 'vitest';

const elmFile = path.resolve(import.meta.dirname, '../../fixtures/cql/HomeOxygenExample.json');

describe('HomeOxygenExample ELM (compiled by scripts/compile-cql.mjs)', () => {
  it('runs in cql-execution and answers what the questionnaire prefills', async () => {
    const elm = JSON.parse(await readFile(elmFile, 'utf8')) as object;
    const library = new cql.Library(elm as ConstructorParameters<typeof cql.Library>[0]);
    const patients = cqlfhir.PatientSource.FHIRv401();
    patients.loadBundles([
      {
        resourceType: 'Bundle',
        type: 'collection',
        entry: [
          { resource: { resourceType: 'Patient', id: 'p1', birthDate: '1950-04-02' } },
          {
            resource: {
              resourceType: 'Condition',
              id: 'c1',
              subject: { reference: 'Patient/p1' },
              code: { coding: [{ system: 'http://snomed.info/sct', code: '389087006' }] },
            },
          },
        ],
      },
    ]);
    const results = await new cql.Executor(library).exec(patients);
    const mine = results.patientResults['p1'] as Record<string, unknown>;
    expect(mine['Has Qualifying Condition']).toBe(true);
    expect(mine['Default Flow Rate Liters Per Minute']).toBe(2);
    expect(String(mine['Patient Birth Date'])).toBe('1950-04-02');
  });
});
