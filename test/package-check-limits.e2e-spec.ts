import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './support/processes.js';

/**
 * `dtr package check` compiles a package's CQL-only libraries as the server does: in the translator's own process,
 * under DTR_CQL_COMPILE_DEADLINE_MS, DTR_CQL_MAX_BYTES and DTR_PREFILL_WORKER_MEMORY_MB. A payer's library that the
 * translator would chew on for a long time, or that makes it exhaust its heap, is reported (`cql-compile-failed`,
 * naming the limit), and the check ends.
 */
const DEFINES = 2000;

/** A package whose one library ships CQL only: DEFINES defines, each building on the one before (seconds to translate). */
function cqlOnlyPackage() {
  const lines = ["library LargePayerLogic version '1.0.0'", "using FHIR version '4.0.1'", 'context Patient'];
  lines.push('define "D0": 0');
  for (let i = 1; i < DEFINES; i++) lines.push(`define "D${i}": "D${i - 1}" + ${i % 7}`);
  const questionnaire = {
    resourceType: 'Questionnaire',
    url: 'http://payer.example.org/Questionnaire/large',
    status: 'active',
    extension: [
      {
        url: 'http://hl7.org/fhir/StructureDefinition/cqf-library',
        valueCanonical: 'http://payer.example.org/Library/LargePayerLogic|1.0.0',
      },
    ],
    item: [
      {
        linkId: 'last',
        type: 'integer',
        extension: [
          {
            url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
            valueExpression: { language: 'text/cql', expression: `"LargePayerLogic"."D${DEFINES - 1}"` },
          },
        ],
      },
    ],
  };
  const library = {
    resourceType: 'Library',
    url: 'http://payer.example.org/Library/LargePayerLogic',
    version: '1.0.0',
    name: 'LargePayerLogic',
    status: 'active',
    content: [{ contentType: 'text/cql', data: Buffer.from(lines.join('\n')).toString('base64') }],
  };
  return { resourceType: 'Bundle', type: 'collection', entry: [{ resource: questionnaire }, { resource: library }] };
}

/** The CLI in a child process (asynchronously: the test's own thread stays free), with these settings. */
function check(file: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(repoRoot, 'bin/dtr.mjs'), 'package', 'check', file, '--json'],
      { cwd: repoRoot, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env }, encoding: 'utf8' },
      (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

interface Report {
  usable: boolean;
  issues: Array<{ code: string; severity: string; message: string; library?: string }>;
}

describe('npx dtr package check: CQL-only libraries within the limits', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dtr-package-limits-'));
  const file = path.join(dir, 'large.json');
  writeFileSync(file, JSON.stringify(cqlOnlyPackage()));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('stops translating a library past DTR_CQL_COMPILE_DEADLINE_MS and reports it (exit 2)', async () => {
    const result = await check(file, { DTR_CQL_COMPILE_DEADLINE_MS: '200' });
    expect(result.code, result.stderr).toBe(2);
    const report = JSON.parse(result.stdout) as Report;
    expect(report.usable).toBe(false);
    expect(report.issues).toContainEqual(
      expect.objectContaining({
        severity: 'error',
        code: 'cql-compile-failed',
        library: 'LargePayerLogic|1.0.0',
        message: expect.stringContaining('the CQL did not compile within the deadline of 200 ms'),
      }),
    );
  });

  it('does not translate a library larger than DTR_CQL_MAX_BYTES, naming the cap', async () => {
    const result = await check(file, { DTR_CQL_MAX_BYTES: '4096' });
    expect(result.code, result.stderr).toBe(2);
    expect((JSON.parse(result.stdout) as Report).issues).toContainEqual(
      expect.objectContaining({
        code: 'cql-compile-failed',
        message: expect.stringMatching(/its CQL \(\d+ bytes\) is larger than the 4096 bytes this server compiles/),
      }),
    );
  });

  it('translates the same library within the default limits: usable, no issue', async () => {
    const result = await check(file, {});
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as Report;
    expect(report).toMatchObject({ usable: true });
    expect(report.issues.filter((i) => i.severity !== 'information')).toEqual([]);
  });

  it('reports a library that makes the translator exhaust its heap, and still checks the rest (exit 2, no crash)', async () => {
    // The translator's test hook: CQL containing the marker makes it grow one array until its heap gives out, which
    // in a worker thread aborts the whole command (V8 exit 134). Here only the translator's process dies.
    const marked = path.join(dir, 'marked.json');
    const bundle = cqlOnlyPackage();
    const library = bundle.entry[1]!.resource as { content: Array<{ data: string }> };
    const cql = Buffer.from(library.content[0]!.data, 'base64').toString('utf8');
    library.content[0]!.data = Buffer.from(`${cql}\n// exhaust the translator`).toString('base64');
    writeFileSync(marked, JSON.stringify(bundle));
    const result = await check(marked, {
      DTR_TEST_CQL_TRANSLATOR_EXHAUST_ON: '// exhaust the translator',
      DTR_PREFILL_WORKER_MEMORY_MB: '128',
    });
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).not.toContain('FATAL ERROR');
    const report = JSON.parse(result.stdout) as Report;
    expect(report.issues).toContainEqual(
      expect.objectContaining({
        severity: 'error',
        code: 'cql-compile-failed',
        library: 'LargePayerLogic|1.0.0',
        message:
          'LargePayerLogic|1.0.0 ships CQL only and the translator failed: the translation needed more memory than its limit of 128 MB; the translator was restarted',
      }),
    );
    // The rest of the check ran: the questionnaire's expression names a define the uncompiled library lacks.
    expect(report.issues.length).toBeGreaterThan(1);
  }, 60_000);

  it('refuses a limit that is not a positive whole number, naming the setting', async () => {
    const result = await check(file, { DTR_CQL_COMPILE_DEADLINE_MS: 'soon' });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('DTR_CQL_COMPILE_DEADLINE_MS must be a positive whole number (got soon)');
  });
});
