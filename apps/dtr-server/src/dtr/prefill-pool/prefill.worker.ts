import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';
import { PrefillEngine, warmUp } from '@dtr/prefill';
import { parentPort } from 'node:worker_threads';
import { PortReader } from './port-reader.js';
import type { JobMessage, WorkerMessage } from './prefill-protocol.js';

/**
 * A prefill worker (see PrefillPool): runs one job at a time with the pure engine. Packages are kept by key, so the
 * patient-independent preparation of a package (compiled libraries, data requirements) is done once per worker.
 */
const MAX_PACKAGES = 16;
const packages = new Map<string, QuestionnairePackage>();
const port = parentPort!;
const send = (message: WorkerMessage) => port.postMessage(message);

function packageFor(key: string, resources: FhirResource[] | undefined): QuestionnairePackage | undefined {
  let pkg = packages.get(key);
  if (pkg) {
    // Most recently used last: the first entry is the one evicted.
    packages.delete(key);
    packages.set(key, pkg);
    return pkg;
  }
  if (!resources) return undefined;
  pkg = QuestionnairePackage.fromResources(resources);
  packages.set(key, pkg);
  while (packages.size > MAX_PACKAGES) packages.delete(packages.keys().next().value!);
  return pkg;
}

async function run(job: JobMessage): Promise<void> {
  const reader = new PortReader(job.port);
  try {
    const pkg = packageFor(job.packageKey, job.packageResources);
    if (!pkg) {
      send({ type: 'need-package', jobId: job.jobId });
      return;
    }
    const questionnaires = job.questionnaires.map((i) => pkg.questionnaires[i]);
    if (questionnaires.some((q) => !q))
      throw new DtrError('INTERNAL', 'the job names a questionnaire the package does not have');
    const { now, ...context } = job.context;
    const results = await new PrefillEngine(reader).runAll({
      ...context,
      now: new Date(now),
      pkg,
      questionnaires: questionnaires as FhirResource[],
    });
    send({ type: 'done', jobId: job.jobId, results });
  } catch (error) {
    send({
      type: 'failed',
      jobId: job.jobId,
      code: error instanceof DtrError ? error.code : 'INTERNAL',
      message: error instanceof Error ? error.message.slice(0, 500) : 'unknown error',
    });
  } finally {
    reader.close();
  }
}

port.on('message', (message: JobMessage) => {
  if (message?.type === 'job') void run(message);
});
warmUp();
send({ type: 'ready' });
