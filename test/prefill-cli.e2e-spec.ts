import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './support/processes.js';

function dtr(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [path.join(repoRoot, 'bin/dtr.mjs'), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    // A generous deadline: this machine may be busy; the hostile cases below set a short one with --deadline.
    env: { ...process.env, DTR_PREFILL_DEADLINE_MS: '120000' },
  });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}

const PACKAGE = 'apps/sandbox/fixtures/packages/sdc-features-example';
const PATIENT = 'apps/sandbox/fixtures/patients/sdc-grace-okafor.json';

describe('npx dtr prefill (offline, for payers testing their packages)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dtr-prefill-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes the prefilled QuestionnaireResponse and reports issues, options offered and timing', () => {
    const out = path.join(dir, 'qr.json');
    const result = dtr(['prefill', '--package', PACKAGE, '--patient', PATIENT, '--out', out, '--timing']);
    expect(result.code).toBe(0);
    const qr = JSON.parse(readFileSync(out, 'utf8')) as {
      resourceType: string;
      questionnaire: string;
      subject: { reference: string };
      item: unknown[];
    };
    expect(qr.resourceType).toBe('QuestionnaireResponse');
    expect(qr.questionnaire).toBe('http://example.org/dtr/Questionnaire/sdc-features|1.0.0');
    expect(qr.subject.reference).toBe('Patient/sdc-grace');
    expect(JSON.stringify(qr.item)).toContain('"valueString":"Okafor"');
    expect(result.stderr).toContain('http://example.org/dtr/Questionnaire/sdc-features|1.0.0: 0 issue(s)');
    expect(result.stderr).toContain(
      'options offered [item diagnosis]: Chronic obstructive pulmonary disease, unspecified; Diabetes mellitus type 2',
    );
    expect(result.stderr).toMatch(
      /timing: resolve [\d.]+ ms, fetch [\d.]+ ms, evaluate [\d.]+ ms, assemble [\d.]+ ms, total [\d.]+ ms/,
    );
    expect(result.stderr).toMatch(/whole command [\d.]+ ms; peak RSS \d+ MB/);
    // The translator and the engine write nothing else to standard output or error.
    expect(result.stdout).toBe('');
    expect(result.stderr).not.toMatch(/kotlin|DeprecationWarning/);
  });

  it('prints the response on standard output without --out, with the origin codes of the IG version asked for', () => {
    const result = dtr(['prefill', '--package', PACKAGE, '--patient', PATIENT, '--ig', '2.1']);
    expect(result.code).toBe(0);
    const qr = JSON.parse(result.stdout) as { item: unknown[] };
    expect(JSON.stringify(qr.item)).toContain('"valueCode":"auto"');
    expect(JSON.stringify(qr.item)).not.toContain('auto-client');
  });

  it('refuses bad input with a clear message and a non-zero exit, writing nothing', () => {
    const out = path.join(dir, 'never.json');
    const badIg = dtr(['prefill', '--package', PACKAGE, '--patient', PATIENT, '--ig', '3.0', '--out', out]);
    expect(badIg.code).not.toBe(0);
    expect(badIg.stderr).toContain('--ig must be 2.0.1, 2.1 or 2.2');
    const notBundle = path.join(dir, 'patient.json');
    writeFileSync(notBundle, JSON.stringify({ resourceType: 'Patient', id: 'x' }));
    const wrong = dtr(['prefill', '--package', PACKAGE, '--patient', notBundle, '--out', out]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain('is not a FHIR Bundle');
    const missing = dtr([
      'prefill',
      '--package',
      path.join(dir, 'no-such-package'),
      '--patient',
      PATIENT,
      '--out',
      out,
    ]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/no-such-package/);
    expect(() => readFileSync(out)).toThrow();
  });

  it("stops a payer's logic at the deadline: prints the issue, writes nothing, exits non-zero", () => {
    const patient = path.join(dir, 'hostile-patient.json');
    writeFileSync(
      patient,
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'collection',
        entry: [{ resource: { resourceType: 'Patient', id: 'h1', birthDate: '1950-03-04' } }],
      }),
    );
    const hostile = 'test/fixtures/hostile-package';
    for (const questionnaire of ['hostile-regex', 'hostile-expand']) {
      const out = path.join(dir, `${questionnaire}.json`);
      const args = ['prefill', '--package', hostile, '--patient', patient, '--questionnaire', questionnaire];
      const result = dtr([...args, '--deadline', '1500', '--out', out]);
      expect(result.code, result.stderr).not.toBe(0);
      expect(result.stderr).toMatch(
        /dtr: the prefill (did not finish within its deadline of 1500 ms|needed more memory)/,
      );
      expect(result.stderr).not.toContain('1950-03-04');
      expect(() => readFileSync(out)).toThrow();
    }
    // The well-behaved questionnaire of the same package prefills under the same deadline.
    const fine = dtr(['prefill', '--package', hostile, '--patient', patient, '--questionnaire', 'well-behaved']);
    expect(fine.code, fine.stderr).toBe(0);
    expect(fine.stdout).toContain('"valueInteger": 42');
    const bad = dtr(['prefill', '--package', hostile, '--patient', patient, '--deadline', 'soon']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('--deadline must be a positive whole number (got soon)');
  });
});
