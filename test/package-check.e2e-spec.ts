import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './support/processes.js';
import { corpusPath, haveCorpus, NEEDS_CORPUS } from './support/corpus.js';

function dtr(args: string[]): { code: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(process.execPath, [path.join(repoRoot, 'bin/dtr.mjs'), ...args], {
      cwd: repoRoot,
      encoding: 'utf8',
      stdio: 'pipe',
    });
    return { code: 0, stdout, stderr: '' };
  } catch (error) {
    const e = error as { status: number; stdout: string; stderr: string };
    return { code: e.status, stdout: e.stdout, stderr: e.stderr };
  }
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64');

describe('npx dtr package check', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dtr-package-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const questionnaire = {
    resourceType: 'Questionnaire',
    url: 'http://payer.example.org/Questionnaire/q',
    extension: [
      {
        url: 'http://hl7.org/fhir/StructureDefinition/cqf-library',
        valueCanonical: 'http://payer.example.org/Library/L',
      },
    ],
    item: [
      {
        linkId: 'a',
        type: 'string',
        extension: [
          {
            url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
            valueExpression: { language: 'text/cql', expression: '"Lib".Name' },
          },
        ],
      },
    ],
  };
  const library = (defines: string[]) => ({
    resourceType: 'Library',
    url: 'http://payer.example.org/Library/L',
    version: '1',
    content: [
      {
        contentType: 'application/elm+json',
        data: b64({
          library: { identifier: { id: 'Lib', version: '1' }, statements: { def: defines.map((name) => ({ name })) } },
        }),
      },
    ],
  });

  it('exits 0 and says "usable" for a sound package in the 2.2 Parameters shape', () => {
    const file = path.join(dir, 'good.json');
    writeFileSync(
      file,
      JSON.stringify({
        resourceType: 'Parameters',
        parameter: [
          {
            name: 'packagebundle',
            resource: {
              resourceType: 'Bundle',
              type: 'collection',
              entry: [{ resource: questionnaire }, { resource: library(['Name']) }],
            },
          },
        ],
      }),
    );
    const result = dtr(['package', 'check', file]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('shape 2.2');
    expect(result.stdout).toMatch(/^usable: 0 error/m);
  });

  it('passes every fixture package the sandbox payer serves without an error or warning (the checker and the engine agree on text/cql-identifier)', () => {
    const fixtures = path.join(repoRoot, 'apps/sandbox/fixtures/packages');
    for (const name of ['home-oxygen-example', 'sdc-features-example', 'adaptive-example']) {
      const result = dtr(['package', 'check', path.join(fixtures, name)]);
      expect({ name, code: result.code, stderr: result.stderr }).toEqual({ name, code: 0, stderr: '' });
      expect(result.stdout).toMatch(/^usable: 0 error, 0 warning/m);
    }
  });

  it('exits 2 and names the missing define and library otherwise', () => {
    const file = path.join(dir, 'bad.json');
    writeFileSync(
      file,
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'collection',
        entry: [{ resource: { ...questionnaire, extension: [] } }],
      }),
    );
    const result = dtr(['package', 'check', file, '--json']);
    expect(result.code).toBe(2);
    const parsed = JSON.parse(result.stdout) as { usable: boolean; issues: Array<{ code: string }> };
    expect(parsed.usable).toBe(false);
    expect(parsed.issues.map((i) => i.code)).toEqual(
      expect.arrayContaining(['missing-cqf-library', 'unknown-library']),
    );
  });

  it('reports a missing path and a bad --ig clearly', () => {
    expect(dtr(['package', 'check', path.join(dir, 'nope.json')])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('no such file or folder'),
    });
    expect(dtr(['package', 'check', dir, '--ig', '3.0'])).toMatchObject({
      code: 64,
      stderr: expect.stringContaining('--ig must be'),
    });
  });

  const corpus = corpusPath('packages', 'HomeO2-IG-Example');
  it.skipIf(!haveCorpus)(`names the problems of the corpus negative package ${NEEDS_CORPUS}`, () => {
    const result = dtr(['package', 'check', corpus]);
    expect(result.code).toBe(2);
    expect(result.stdout).toContain('missing-cqf-library');
    expect(result.stdout).toContain('unknown-library: initialExpression names library BasicPatientInfoPrepopulation');
  });
});
