import { FHIR_ID, FHIR_RESOURCE_TYPE, type FhirResource } from '@dtr/fhir';
import type { PrefillRequest, PrefillResult } from '@dtr/prefill';
import { z } from 'zod';

/**
 * What a prefill job carries between the server and a prefill worker process (inside the PayerLogicPool's envelope).
 * The worker gets the package (plain JSON, once per worker and package) and the launch context; it never gets the
 * EHR's token: patient data reaches it only as the answers to the reads and searches it asks the server for.
 */

/** What a worker needs to prefill: everything of a PrefillRequest except the package object and the reader. */
export type PrefillJobContext = Omit<PrefillRequest, 'pkg' | 'questionnaire' | 'session' | 'now'> & {
  /** Evaluation time (ISO 8601), the same for every questionnaire of the job. */
  now: string;
};

/** Server → worker: the job's payload. */
export interface PrefillPayload {
  packageKey: string;
  /** The package's resources; sent when the worker is not known to have this package already. */
  packageResources?: FhirResource[];
  /** Indexes into the package's questionnaires, in the order the answers are wanted. */
  questionnaires: number[];
  context: PrefillJobContext;
}

/** Worker → server: a finished job's result. */
export type PrefillOutcome = PrefillResult[];

const resourceType = z.string().regex(FHIR_RESOURCE_TYPE);

/**
 * Worker → server during a job: the only two questions a worker may ask. Strict: anything else (another field, a
 * URL, a header) is refused, so what crosses is exactly a resource type with an id or with search parameters.
 */
export const dataRequest = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('read'),
      id: z.number().int().nonnegative(),
      resourceType,
      resourceId: z.string().regex(FHIR_ID),
    })
    .strict(),
  z
    .object({
      type: z.literal('search'),
      id: z.number().int().nonnegative(),
      resourceType,
      params: z.record(z.string().max(256), z.string().max(64 * 1024)),
    })
    .strict(),
]);
export type DataRequest = z.infer<typeof dataRequest>;

/** Server → worker during a job: the answer to one data request. */
export type DataReply =
  | { id: number; ok: true; resources: FhirResource[] }
  /** `reason` names a failure the engine acts on (see CodeInUnsupportedError); the message is for people. */
  | { id: number; ok: false; message: string; reason?: 'code-in-unsupported' };
