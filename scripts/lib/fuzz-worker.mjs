// Worker thread of `npm run fuzz`: runs what `dtr package check` and `dtr prefill` run, on one input at a time, and
// answers how it ended. The main thread watches the clock: a case that does not answer is a hang, and the worker is
// replaced. A programming error escaping (TypeError, RangeError, ReferenceError, SyntaxError from our code) is a crash;
// any other thrown error is a clear refusal, as the CLI would print it.
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';

const load = (rel) => import(pathToFileURL(path.join(workerData.root, 'dist', rel)).href);
const { compileCqlOnlyLibraries, QuestionnairePackage } = await load('libs/fhir/src/index.js');
const { parsePackageResponse, resourcesOf, validatePackage } = await load(
  'libs/payer/src/package/package-response.js',
).then(async (m) => ({ ...m, ...(await load('libs/payer/src/package/package-validator.js')) }));
const { BundleReader, PrefillEngine } = await load('libs/prefill/src/index.js');

const PROGRAMMING = new Set(['TypeError', 'RangeError', 'ReferenceError', 'SyntaxError']);

async function packageCheck(body) {
  const compiled = await compileCqlOnlyLibraries(resourcesOf(parsePackageResponse(body)));
  const model = QuestionnairePackage.fromResources(compiled.resources);
  return [...compiled.issues, ...validatePackage(model)].length;
}

let prefillPackage;
async function prefill(bundle) {
  prefillPackage ??= QuestionnairePackage.fromResources(
    (await compileCqlOnlyLibraries(resourcesOf(parsePackageResponse(workerData.prefillPackage)))).resources,
  );
  const pkg = prefillPackage;
  if (bundle?.resourceType !== 'Bundle') throw new Error('not a FHIR Bundle');
  const reader = BundleReader.fromBundle(bundle, { valueSets: pkg.valueSets });
  const patient = reader.resourcesOfType('Patient')[0];
  if (!patient?.id) throw new Error('no Patient with an id');
  const order = reader.resourcesOfType('DeviceRequest').find((r) => r.id);
  const results = await new PrefillEngine(reader).runAll({
    pkg,
    questionnaires: pkg.questionnaires,
    patientId: patient.id,
    ...(order ? { order: `DeviceRequest/${order.id}` } : {}),
    igVersion: '2.2',
    codeIn: true,
  });
  return results.length;
}

parentPort.on('message', async ({ kind, input }) => {
  try {
    await (kind === 'package' ? packageCheck(input) : prefill(input));
    parentPort.postMessage({ outcome: 'ok' });
  } catch (error) {
    const name = error?.name ?? 'Error';
    // Errors our code raises on purpose are named (DtrError, or plain Error with a message for the CLI to print).
    const programming = PROGRAMMING.has(name) && !String(error?.message).startsWith('JSON');
    parentPort.postMessage({
      outcome: programming ? 'crash' : 'refused',
      message: `${name}: ${String(error?.message).slice(0, 160)}`,
      stack: programming ? String(error?.stack).split('\n').slice(0, 4).join(' | ') : undefined,
    });
  }
});
parentPort.postMessage({ outcome: 'ready' });
