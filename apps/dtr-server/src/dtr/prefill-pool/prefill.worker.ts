import { type FhirResource, QuestionnairePackage } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';
import { PrefillEngine, warmUp } from '@dtr/prefill';
import { serveJobs } from '../payer-logic-pool/payer-logic-child.js';
import { ChannelReader } from './channel-reader.js';
import type { DataReply, PrefillOutcome, PrefillPayload } from './prefill-protocol.js';

/**
 * A prefill worker process (see PrefillPool): runs one job at a time with the pure engine. Packages are kept by key,
 * so the patient-independent preparation of a package (compiled libraries, data requirements) is done once per worker.
 */
const MAX_PACKAGES = 16;
const packages = new Map<string, QuestionnairePackage>();

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

serveJobs(async (raw, job): Promise<PrefillOutcome | undefined> => {
  const payload = raw as PrefillPayload;
  const pkg = packageFor(payload.packageKey, payload.packageResources);
  if (!pkg) {
    job.again(payload.packageKey);
    return undefined;
  }
  const reader = new ChannelReader((request) => job.ask(request));
  job.onAnswer((reply) => reader.deliver(reply as DataReply));
  try {
    const questionnaires = payload.questionnaires.map((i) => pkg.questionnaires[i]);
    if (questionnaires.some((q) => !q))
      throw new DtrError('INTERNAL', 'the job names a questionnaire the package does not have');
    const { now, ...context } = payload.context;
    return await new PrefillEngine(reader).runAll({
      ...context,
      now: new Date(now),
      pkg,
      questionnaires: questionnaires as FhirResource[],
    });
  } finally {
    reader.close();
  }
}, warmUp);
