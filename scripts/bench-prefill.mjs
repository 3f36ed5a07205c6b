#!/usr/bin/env node
// npm run bench:prefill — prefill figures per package × patient: warm median and p95, cold first run, resources read,
// FHIR searches, peak RSS; and the same for baseline mode (every define of every library over every resource of the
// retrieved types), with the ratio. Reads the corpus at ../shared/corpus (never copied into the repository).
import { execFileSync } from 'node:child_process';
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
const { BundleReader, PrefillEngine, setEngineFastPaths, warmUp } = await load('libs/prefill/src/index.js');

const WARM_RUNS = Number(process.env.BENCH_RUNS ?? 30);
const cases = [
  { pkg: 'HomeOxygenTherapy', order: (r) => r.resourcesOfType('DeviceRequest')[0] },
];
const patients = ['dtr-pat015-inferno.json', 'synthea-uscore-pat85.json', 'synthea-johnnie679.json'];

function quantile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

let peakRss = process.memoryUsage().rss;
const sampleRss = () => (peakRss = Math.max(peakRss, process.memoryUsage().rss));

const coldStart = performance.now();
warmUp();
const modelLoadMs = performance.now() - coldStart;

const rows = [];
for (const c of cases) {
  const pkg = QuestionnairePackage.fromResources(resourcesOf(loadPackageFromPath(path.join(corpus, 'packages', c.pkg, 'original'))));
  for (const file of patients) {
    const bundle = JSON.parse(readFileSync(path.join(corpus, 'patients', file), 'utf8'));
    const reader = BundleReader.fromBundle(bundle);
    const patient = reader.resourcesOfType('Patient')[0];
    const order = c.order(reader);
    const total = (bundle.entry ?? []).length;
    const measure = async (baseline) => {
      // Baseline is the reference app's way: every define, all resources of the retrieved types, the plain engine.
      setEngineFastPaths(!baseline);
      const times = [];
      let last;
      let cold;
      for (let i = 0; i <= WARM_RUNS; i++) {
        const r = BundleReader.fromBundle(bundle);
        const t0 = performance.now();
        for (const questionnaire of pkg.questionnaires) {
          last = await new PrefillEngine(r).run({
            pkg,
            questionnaire,
            patientId: patient.id,
            ...(order ? { order: `${order.resourceType}/${order.id}` } : {}),
            igVersion: '2.2',
            baseline,
          });
        }
        const ms = performance.now() - t0;
        if (i === 0) cold = ms;
        else times.push(ms);
        sampleRss();
        last.reader = r;
      }
      const searches = last.reader.searches.length;
      const fetched = new Set();
      for (const s of last.reader.searches) for (const x of await BundleReader.fromBundle(bundle).search(s.resourceType, s.params)) fetched.add(`${x.resourceType}/${x.id}`);
      return { median: quantile(times, 0.5), p95: quantile(times, 0.95), cold, searches, resources: fetched.size + last.reader.reads.length };
    };
    const fast = await measure(false);
    const base = await measure(true);
    setEngineFastPaths(true);
    rows.push({ pkg: c.pkg, patient: file.replace(/\.json$/, ''), total, fast, base });
  }
}

const pad = (v, n) => String(v).padStart(n);
console.log(`prefill benchmark: ${WARM_RUNS} warm runs each, all questionnaires of the package per run; model load ${modelLoadMs.toFixed(0)} ms (once per process)`);
console.log(['package', 'patient', 'res', 'mode', 'median ms', 'p95 ms', 'cold ms', 'searches', 'read', 'x faster'].join(' | '));
for (const r of rows) {
  for (const [mode, m] of [['minimal', r.fast], ['baseline', r.base]]) {
    console.log(
      [r.pkg, r.patient, pad(r.total, 4), mode.padEnd(8), pad(m.median.toFixed(1), 8), pad(m.p95.toFixed(1), 7), pad(m.cold.toFixed(1), 7), pad(m.searches, 3), pad(m.resources, 4), mode === 'minimal' ? pad((r.base.median / r.fast.median).toFixed(1), 5) : ''].join(' | '),
    );
  }
}
console.log(`peak RSS ${(peakRss / 1024 / 1024).toFixed(0)} MB`);
