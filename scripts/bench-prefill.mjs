#!/usr/bin/env node
// npm run bench:prefill — prefill figures for the HomeOxygenTherapy package (all four questionnaires) per corpus
// patient: warm median and p95, cold first run, resources read, FHIR searches; the same for baseline mode (every
// define of every library over every resource of the retrieved types, on the plain engine, one questionnaire at a
// time, nothing prepared ahead), with the ratio; resources read pooled over the Synthea patients against a type-wide
// fetch; peak RSS; and a cold `dtr prefill` in a fresh process. Reads the corpus at ../shared/corpus (never copied
// into the repository). BENCH_RUNS sets the warm runs (default 30).
import { execFileSync, spawnSync } from 'node:child_process';
import { devNull } from 'node:os';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const corpus = path.resolve(root, '..', 'shared', 'corpus');
if (!existsSync(path.join(corpus, 'packages'))) {
  console.error(`bench:prefill: the corpus is absent (looked for ${corpus}); nothing to measure`);
  process.exit(1);
}
execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);
const { QuestionnairePackage } = await load('libs/fhir/src/index.js');
const { loadPackageFromPath, resourcesOf } = await load('libs/payer/src/index.js');
const { BASELINE, BundleReader, PrefillEngine, setEngineFastPaths, warmUp } = await load('libs/prefill/src/index.js');

const WARM_RUNS = Number(process.env.BENCH_RUNS ?? 30);
const PACKAGE = 'HomeOxygenTherapy';
const packageFolder = path.join(corpus, 'packages', PACKAGE, 'original');
const patientFiles = readdirSync(path.join(corpus, 'patients'))
  .filter((f) => f.endsWith('.json') && (f.startsWith('synthea-') || f === 'dtr-pat015-inferno.json'))
  .sort();
const now = new Date('2026-11-22T12:00:00Z');

const quantile = (values, q) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))];
const peakRss = () => process.resourceUsage().maxRSS * 1024;

const coldStart = performance.now();
warmUp();
const modelLoadMs = performance.now() - coldStart;
const pkg = QuestionnairePackage.fromResources(resourcesOf(loadPackageFromPath(packageFolder)));

/** One prefill of the whole package for a patient: minimal (a session over all questionnaires) or baseline. */
async function prefill(bundle, baseline) {
  const reader = BundleReader.fromBundle(bundle);
  const patient = reader.resourcesOfType('Patient')[0];
  const order = reader
    .resourcesOfType('DeviceRequest')
    .find((r) => String(r.subject?.reference).endsWith(`Patient/${patient.id}`));
  const common = {
    pkg,
    patientId: patient.id,
    ...(order ? { order: `DeviceRequest/${order.id}` } : {}),
    igVersion: '2.2',
    now,
  };
  const t0 = performance.now();
  let results;
  if (baseline) {
    results = [];
    for (const questionnaire of pkg.questionnaires)
      results.push(await new PrefillEngine(reader, BASELINE).run({ ...common, questionnaire }));
  } else {
    results = await new PrefillEngine(reader).runAll({ ...common, questionnaires: pkg.questionnaires });
  }
  return { ms: performance.now() - t0, reader, responses: results.map((r) => r.questionnaireResponse) };
}

/** Distinct resources the EHR would return for the searches and reads a prefill made. */
async function resourcesRead(bundle, reader) {
  const fresh = BundleReader.fromBundle(bundle);
  const seen = new Set(reader.reads);
  for (const s of reader.searches)
    for (const r of await fresh.search(s.resourceType, s.params)) seen.add(`${r.resourceType}/${r.id}`);
  return seen.size;
}

async function measure(bundle, baseline) {
  setEngineFastPaths(!baseline);
  try {
    const times = [];
    let first;
    let last;
    for (let i = 0; i <= WARM_RUNS; i++) {
      last = await prefill(bundle, baseline);
      if (i === 0) first = last.ms;
      else times.push(last.ms);
    }
    return {
      median: quantile(times, 0.5),
      p95: quantile(times, 0.95),
      cold: first,
      searches: last.reader.searches.length,
      read: await resourcesRead(bundle, last.reader),
      responses: last.responses,
    };
  } finally {
    setEngineFastPaths(true);
  }
}

const rows = [];
for (const file of patientFiles) {
  const bundle = JSON.parse(readFileSync(path.join(corpus, 'patients', file), 'utf8'));
  rows.push({
    patient: file.replace(/\.json$/, ''),
    total: (bundle.entry ?? []).length,
    fast: await measure(bundle, false),
    bundle,
  });
}
const rssMinimal = peakRss();
for (const row of rows) {
  row.base = await measure(row.bundle, true);
  row.same = JSON.stringify(row.base.responses) === JSON.stringify(row.fast.responses);
}

// A cold `dtr prefill` of the package for the largest patient, in a fresh process (model load included).
const largest = rows.reduce((a, b) => (b.total > a.total ? b : a));
const coldCli = performance.now();
const coldRun = spawnSync(
  process.execPath,
  [
    path.join(root, 'bin', 'dtr.mjs'),
    'prefill',
    '--package',
    packageFolder,
    '--patient',
    path.join(corpus, 'patients', `${largest.patient}.json`),
    '--out',
    devNull,
    '--timing',
  ],
  { encoding: 'utf8' },
);
const coldCliMs = performance.now() - coldCli;
if (coldRun.status !== 0) throw new Error(`dtr prefill failed: ${coldRun.stderr}`);
// The command reports its own peak RSS with --timing.
const coldRss = /peak RSS (\d+) MB/.exec(coldRun.stderr)?.[1];

const pad = (v, n) => String(v).padStart(n);
console.log(
  `prefill benchmark: ${PACKAGE}, all ${pkg.questionnaires.length} questionnaires per prefill, ${WARM_RUNS} warm runs per figure; model load ${modelLoadMs.toFixed(0)} ms (once per process)`,
);
console.log(
  'minimal = one session over all questionnaires, referenced defines only, minimum searches, engine fast paths',
);
console.log(
  'baseline = each questionnaire alone, every define of every library, every resource of the retrieved types, plain engine',
);
console.log(
  [
    'patient'.padEnd(24),
    'res',
    'mode    ',
    'median ms',
    ' p95 ms',
    'cold ms',
    'srch',
    'read',
    'x faster',
    'same QR',
  ].join(' | '),
);
for (const r of rows) {
  for (const [mode, m] of [
    ['minimal', r.fast],
    ['baseline', r.base],
  ]) {
    console.log(
      [
        r.patient.padEnd(24),
        pad(r.total, 3),
        mode.padEnd(8),
        pad(m.median.toFixed(1), 9),
        pad(m.p95.toFixed(1), 7),
        pad(m.cold.toFixed(1), 7),
        pad(m.searches, 4),
        pad(m.read, 4),
        mode === 'minimal' ? pad((r.base.median / r.fast.median).toFixed(1), 8) : pad('', 8),
        mode === 'minimal' ? (r.same ? 'yes' : 'NO') : '',
      ].join(' | '),
    );
  }
}
const synthea = rows.filter((r) => r.patient.startsWith('synthea-'));
const pooledMinimal = synthea.reduce((n, r) => n + r.fast.read, 0);
const pooledTypeWide = synthea.reduce((n, r) => n + r.base.read, 0);
console.log(
  `resources read over the ${synthea.length} Synthea patients: ${pooledMinimal} of ${pooledTypeWide} a type-wide fetch of the retrieved types returns (1/${(pooledTypeWide / Math.max(1, pooledMinimal)).toFixed(1)})`,
);
console.log(
  `largest patient ${largest.patient} (${largest.total} resources): minimal ${largest.fast.median.toFixed(1)} ms, ${(largest.base.median / largest.fast.median).toFixed(1)}x faster than baseline`,
);
console.log(`identical responses in every case: ${rows.every((r) => r.same) ? 'yes' : 'NO'}`);
console.log(
  `cold \`dtr prefill\` (fresh process, ${largest.patient}): ${coldCliMs.toFixed(0)} ms, peak RSS ${coldRss ?? '?'} MB`,
);
console.log(
  `peak RSS of this benchmark process (all ${rows.length} patients and their results held): ${(rssMinimal / 1048576).toFixed(0)} MB through the minimal runs, ${(peakRss() / 1048576).toFixed(0)} MB after the baseline runs`,
);
