import { DtrError } from '@dtr/kernel';
import type { FhirClient, FhirResource } from '@dtr/fhir';

/** What the EHR answered to a save. */
export type EhrSaveResult =
  | { kind: 'saved'; id: string; versionId?: string; savedAt: Date; stored: FhirResource }
  /** 412: someone else changed the response since our version; `theirs` is the EHR's current one when readable. */
  | { kind: 'conflict'; theirs?: FhirResource; message: string }
  /** The write did not happen (5xx, network, refused): the draft stays with us. */
  | { kind: 'failed'; status: 502 | 503; message: string };

const QR = 'QuestionnaireResponse';

export const CONFLICT_MESSAGE =
  'Someone else changed this QuestionnaireResponse in the EHR since it was opened here. Both versions are shown: ' +
  'saving again stores yours as the newest version.';

/**
 * The session's QuestionnaireResponses in the EHR, written with the `supplement` identity (saving the clinician's
 * documentation in the EHR is supplementing it): created on the first save, then updated with `If-Match` on the
 * version we last wrote, so a concurrent change is detected (412) and never overwritten.
 * @see https://hl7.org/fhir/R4/http.html#concurrency
 * @see https://hl7.org/fhir/us/davinci-dtr/specification.html (QuestionnaireResponse storage and resumption)
 */
export class EhrResponses {
  constructor(private readonly ehr: FhirClient) {}

  async save(response: FhirResource, known: { id?: string; versionId?: string }, now: Date): Promise<EhrSaveResult> {
    try {
      const stored = known.id
        ? await this.ehr.update(
            { ...response, id: known.id },
            known.versionId ? { ifMatch: `W/"${known.versionId}"` } : {},
          )
        : await this.ehr.create({ ...response, id: undefined });
      if (!stored?.id) return { kind: 'failed', status: 502, message: 'the EHR did not return the saved response' };
      return {
        kind: 'saved',
        id: stored.id,
        ...(stored.meta?.versionId ? { versionId: stored.meta.versionId } : {}),
        savedAt: now,
        stored,
      };
    } catch (error) {
      return this.failure(error, known.id);
    }
  }

  /** The in-progress responses of the patient (the DTR resume search), optionally the one the launch named. */
  async inProgress(patient: string): Promise<FhirResource[]> {
    const found = await this.ehr.search(QR, { subject: `Patient/${patient}`, status: 'in-progress' }, { maxPages: 5 });
    return found.resources;
  }

  async read(id: string): Promise<FhirResource | undefined> {
    return this.ehr.read(QR, id);
  }

  private async failure(error: unknown, id: string | undefined): Promise<EhrSaveResult> {
    const status = DtrError.is(error) ? error.details['status'] : undefined;
    if (status === 412 && id) {
      const theirs = await this.ehr.read(QR, id).catch(() => undefined);
      return {
        kind: 'conflict',
        ...(theirs ? { theirs } : {}),
        message: CONFLICT_MESSAGE,
      };
    }
    const reason = DtrError.is(error) ? error.message : 'the EHR could not be reached';
    return {
      kind: 'failed',
      status: status === 503 ? 503 : 502,
      message: `The draft is saved here but not yet in the EHR (${reason}). Save again later to store it in the EHR.`,
    };
  }
}

/** Every reference held by the DTR context extension(s) of a response (`qr-context`, or `context` before 2.2). */
export function contextReferences(response: FhirResource): string[] {
  const out: string[] = [];
  const visit = (extensions: unknown, inContext: boolean) => {
    if (!Array.isArray(extensions)) return;
    for (const ext of extensions as Array<Record<string, unknown>>) {
      const url = typeof ext['url'] === 'string' ? ext['url'] : '';
      const here = inContext || /\/StructureDefinition\/(qr-)?context$/.test(url);
      const ref = (ext['valueReference'] as { reference?: unknown } | undefined)?.reference;
      if (here && typeof ref === 'string') out.push(ref);
      visit(ext['extension'], here);
    }
  };
  visit(response['extension'], false);
  return out;
}

/** Whether `reference` (relative or absolute) names `target` (`Type/id`). */
export function sameReference(reference: string, target: string): boolean {
  return (
    reference === target || reference.endsWith(`/${target}`) || reference.replace(/\/_history\/[^/]+$/, '') === target
  );
}
