import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseUntrustedJson } from '@dtr/kernel';
import {
  CQL_MAX_BYTES_DEFAULT,
  compileCqlOnlyLibraries,
  type FhirResource,
  QuestionnairePackage,
  isDtrVersion,
} from '@dtr/fhir';
import { loadPackageFromPath, resourcesOf } from '@dtr/payer';
import { BundleReader, type PrefillResult } from '@dtr/prefill';
import { CqlCompilePool } from '../dtr/prefill-pool/cql-compile-pool.js';
import { PREFILL_LIMIT_DEFAULTS, PrefillPool } from '../dtr/prefill-pool/prefill-pool.js';

interface PrefillOptions {
  package: string;
  patient: string;
  order?: string;
  coverage?: string;
  questionnaire?: string;
  user?: string;
  ig: string;
  out?: string;
  timing?: boolean;
  deadline: number;
}

/** The heap limit of the CLI's workers, as the server's (DTR_PREFILL_WORKER_MEMORY_MB). */
const workerMemoryMb = () =>
  positiveIntFrom(
    'DTR_PREFILL_WORKER_MEMORY_MB',
    process.env['DTR_PREFILL_WORKER_MEMORY_MB'],
    PREFILL_LIMIT_DEFAULTS.memoryMb,
  );

/** A positive whole number from an option or the environment, or the default; anything else is refused by name. */
function positiveIntFrom(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive whole number (got ${value})`);
  return n;
}

/**
 * A package's CQL-only libraries translated as the server translates them: in the translator's process, under the
 * server's size cap (DTR_CQL_MAX_BYTES), deadline (DTR_CQL_COMPILE_DEADLINE_MS) and heap limit
 * (DTR_PREFILL_WORKER_MEMORY_MB); a library past any of them is an issue, not a hang or a crash of this command.
 */
export async function compileCqlOnlyInWorker(resources: FhirResource[]): ReturnType<typeof compileCqlOnlyLibraries> {
  const compiler = new CqlCompilePool({
    deadlineMs: positiveIntFrom('DTR_CQL_COMPILE_DEADLINE_MS', process.env['DTR_CQL_COMPILE_DEADLINE_MS'], 30_000),
    memoryMb: workerMemoryMb(),
  });
  return compileCqlOnlyLibraries(resources, {
    translate: compiler.translate,
    maxCqlBytes: positiveIntFrom('DTR_CQL_MAX_BYTES', process.env['DTR_CQL_MAX_BYTES'], CQL_MAX_BYTES_DEFAULT),
  }).finally(() => compiler.close());
}

/**
 * `dtr prefill`: runs the prefill engine offline on a package and a patient bundle, prints the QuestionnaireResponse
 * (or writes it with --out) and the issues. Payers can test their packages without an EHR.
 */
export function registerPrefillCommand(program: Command): void {
  program
    .command('prefill')
    .description('prefill a questionnaire from a package and a patient bundle, offline')
    .requiredOption('--package <path>', 'package: $questionnaire-package answer, Bundle, or folder of FHIR JSON')
    .requiredOption('--patient <bundle>', 'a FHIR Bundle with one patient and their resources')
    .option('--order <ref>', 'the order in context, e.g. DeviceRequest/123 (default: the first order in the bundle)')
    .option('--coverage <ref>', 'the coverage in context (default: the first Coverage in the bundle)')
    .option('--questionnaire <canonical-or-id>', 'which questionnaire (default: every questionnaire of the package)')
    .option('--user <ref>', 'the clinician, e.g. Practitioner/1 (author of the answers)')
    .option('--ig <version>', 'DTR IG version: 2.0.1, 2.1 or 2.2', '2.2')
    .option('--out <file>', 'write the QuestionnaireResponse(s) here instead of standard output')
    .option('--timing', 'print where the time went')
    .option(
      '--deadline <ms>',
      'stop the evaluation after this long (default: DTR_PREFILL_DEADLINE_MS, else 5000)',
      (value) => positiveIntFrom('--deadline', value, 0),
      positiveIntFrom(
        'DTR_PREFILL_DEADLINE_MS',
        process.env['DTR_PREFILL_DEADLINE_MS'],
        PREFILL_LIMIT_DEFAULTS.deadlineMs,
      ),
    )
    .action(async (options: PrefillOptions) => {
      if (!isDtrVersion(options.ig)) throw new Error(`--ig must be 2.0.1, 2.1 or 2.2 (got ${options.ig})`);
      const started = performance.now();
      const input = await loadInput(options);
      const loaded = performance.now();
      // The payer's logic runs in a worker process under the deadline and memory limit the server uses, so a package
      // that would never finish (a runaway regular expression, a huge expand) or that exhausts its heap (a huge
      // collection, which aborts the process it runs in) is stopped and reported, and this command still answers.
      const pool = new PrefillPool({
        size: 1,
        deadlineMs: options.deadline,
        memoryMb: workerMemoryMb(),
      });
      let results: PrefillResult[];
      try {
        // One session for all selected questionnaires: each search and define once.
        results = await pool.run(
          {
            pkg: input.pkg,
            questionnaires: input.selected,
            patientId: input.patientId,
            ...(input.order ? { order: input.order } : {}),
            ...(input.coverage ? { coverage: input.coverage } : {}),
            ...(options.user ? { user: options.user } : {}),
            igVersion: options.ig,
            codeIn: true,
          },
          input.reader,
        );
      } finally {
        await pool.close();
      }
      writeResponses(options, results);
      const report = results.flatMap((result, i) =>
        reportOf(input.pkg.questionnaireKey(input.selected[i]!), result, options.timing === true),
      );
      if (options.timing) {
        const peakMb = (process.resourceUsage().maxRSS / 1024).toFixed(0);
        report.push(
          `load ${(loaded - started).toFixed(1)} ms; whole command ${(performance.now() - started).toFixed(1)} ms; peak RSS ${peakMb} MB`,
        );
      }
      process.stderr.write(`${report.join('\n')}\n`);
    });
}

/** 1. The package (CQL-only libraries compiled), the patient bundle, the context and the questionnaires chosen. */
async function loadInput(options: PrefillOptions) {
  const compiled = await compileCqlOnlyInWorker(resourcesOf(loadPackageFromPath(options.package)));
  for (const issue of compiled.issues)
    process.stderr.write(`package: ${issue.severity.toUpperCase()} ${issue.code}: ${issue.message}\n`);
  const pkg = QuestionnairePackage.fromResources(compiled.resources);
  const bundle = parseUntrustedJson(readFileSync(options.patient, 'utf8'), {
    maxDepth: 128,
    maxBytes: 256 * 1024 * 1024,
  }) as {
    resourceType?: string;
    entry?: Array<{ resource?: FhirResource }>;
  };
  if (bundle.resourceType !== 'Bundle') throw new Error(`${options.patient} is not a FHIR Bundle`);
  // The reader expands the package's value sets for `code:in`, as an EHR with a terminology service does, so the
  // engine plans the same searches offline as in an EHR session.
  const reader = BundleReader.fromBundle(bundle, { valueSets: pkg.valueSets });
  const patient = reader.resourcesOfType('Patient')[0];
  if (!patient?.id) throw new Error(`${options.patient} has no Patient with an id`);
  const firstOf = (...types: string[]) => {
    for (const t of types) {
      const found = reader.resourcesOfType(t).find((r) => r.id);
      if (found) return `${t}/${found.id}`;
    }
    return undefined;
  };
  const selected = options.questionnaire
    ? pkg.questionnaires.filter(
        (q) => q.id === options.questionnaire || pkg.questionnaireKey(q).startsWith(options.questionnaire!),
      )
    : pkg.questionnaires;
  if (selected.length === 0) throw new Error('no questionnaire matches');
  return {
    pkg,
    reader,
    selected,
    patientId: patient.id,
    order: options.order ?? firstOf('DeviceRequest', 'ServiceRequest', 'MedicationRequest', 'NutritionOrder'),
    coverage: options.coverage ?? firstOf('Coverage'),
  };
}

/** 2. The response (one) or a collection Bundle of them (several), to --out or standard output. */
function writeResponses(options: PrefillOptions, results: PrefillResult[]): void {
  const responses = results.map((r) => r.questionnaireResponse);
  const output = JSON.stringify(
    responses.length === 1
      ? responses[0]
      : { resourceType: 'Bundle', type: 'collection', entry: responses.map((resource) => ({ resource })) },
    null,
    2,
  );
  if (options.out) writeFileSync(options.out, `${output}\n`);
  else process.stdout.write(`${output}\n`);
}

/** 3. Per questionnaire: its issues, the options offered per item, and with --timing where the time went. */
function reportOf(key: string, result: PrefillResult, timing: boolean): string[] {
  const report = [`${key}: ${result.issues.length} issue(s)`];
  for (const issue of result.issues) {
    report.push(
      `  ${issue.severity.toUpperCase().padEnd(11)} ${issue.code}: ${issue.message}${issue.linkId ? ` [item ${issue.linkId}]` : ''}`,
    );
  }
  for (const [linkId, offered] of Object.entries(result.options)) {
    const labels = offered.map((o) => {
      const c = o['valueCoding'] as { code?: string; display?: string } | undefined;
      return c ? (c.display ?? c.code ?? '') : JSON.stringify(Object.values(o)[0]);
    });
    report.push(`  options offered [item ${linkId}]: ${labels.join('; ')}`);
  }
  if (timing) {
    const { ms, searches, reads, resourcesRead, definesEvaluated } = result.stats;
    report.push(
      `  timing: resolve ${ms.resolve.toFixed(1)} ms, fetch ${ms.fetch.toFixed(1)} ms, evaluate ${ms.evaluate.toFixed(1)} ms, assemble ${ms.assemble.toFixed(1)} ms, total ${ms.total.toFixed(1)} ms`,
    );
    report.push(
      `  data: ${searches} search(es), ${reads} read(s), ${resourcesRead} resource(s); ${definesEvaluated} define(s) evaluated`,
    );
  }
  return report;
}
