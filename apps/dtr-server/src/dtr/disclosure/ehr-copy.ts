import { createHash } from 'node:crypto';
import type { FhirResource, HttpFhirClient } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';
import { SUBMISSION_SYSTEM, type Submission } from '@dtr/disclosure';

export interface CopyContext {
  /** `Patient/x` as the EHR knows the patient. */
  patient: string;
  /** The signed-in clinician (fhirUser), the copy's author. */
  author?: string;
  /** The order the documentation is for. */
  order?: string;
  payerName: string;
  /** Our disclose client, named as the Provenance's assembler. */
  discloseClientId: string;
  now: Date;
}

export type CopyResult =
  | { kind: 'verified'; documentReference: string; provenance: string; created: boolean }
  | { kind: 'failed'; step: 'write' | 'provenance' | 'read-back'; message: string; status: number };

/** LOINC "Questionnaire response Document". */
const DOCUMENT_TYPE = { system: 'http://loinc.org', code: '74465-6', display: 'Questionnaire response Document' };

export const sha1Base64 = (bytes: string) => createHash('sha1').update(bytes, 'utf8').digest('base64');
export const sha256Hex = (bytes: string) => createHash('sha256').update(bytes, 'utf8').digest('hex');

/**
 * The copy of what leaves for the payer, written into the EHR with the disclose identity before anything is sent:
 * a DocumentReference whose attachment is the exact bytes to be sent (`hash` = base64 SHA-1, as FHIR defines it),
 * linked to the questionnaire response version and the order, then a Provenance (the clinician as author, our
 * disclose client as assembler). Both are conditional creates (on our submission identifier, on the target), so a
 * retry after a lost answer never makes a second copy. The copy is then read back and its bytes and hash compared:
 * only a verified copy lets the submission be queued.
 */
export class EhrCopy {
  /**
   * @param ehr the disclose identity's client: writes the copy and its provenance
   * @param reader the launch identity's client: reads the copy back (an independent look at what the EHR holds)
   */
  constructor(
    private readonly ehr: HttpFhirClient,
    private readonly reader: HttpFhirClient,
  ) {}

  async write(submission: Submission, ctx: CopyContext): Promise<CopyResult> {
    let document: FhirResource;
    try {
      document = await this.ehr.create(documentReferenceOf(submission, ctx), {
        ifNoneExist: `identifier=${encodeURIComponent(`${SUBMISSION_SYSTEM}|${submission.id}`)}`,
      });
    } catch (error) {
      return failed('write', error);
    }
    if (!document.id)
      return { kind: 'failed', step: 'write', status: 502, message: 'the EHR did not say where it stored the copy' };
    const documentReference = `DocumentReference/${document.id}`;
    let provenance: FhirResource;
    try {
      provenance = await this.ehr.create(provenanceOf(submission, documentReference, ctx), {
        ifNoneExist: `target=${encodeURIComponent(documentReference)}`,
      });
    } catch (error) {
      return failed('provenance', error);
    }
    const check = await this.readBack(document.id, submission);
    if (check) return check;
    return {
      kind: 'verified',
      documentReference,
      provenance: `Provenance/${provenance.id ?? ''}`,
      created: document.meta?.versionId === '1',
    };
  }

  /** The stored copy, byte for byte and by hash, against what will be sent. */
  private async readBack(id: string, submission: Submission): Promise<CopyResult | undefined> {
    let stored: FhirResource | undefined;
    try {
      stored = await this.reader.read('DocumentReference', id);
    } catch (error) {
      return failed('read-back', error);
    }
    const attachment = (
      stored?.['content'] as Array<{ attachment?: { data?: string; hash?: string } }> | undefined
    )?.[0]?.attachment;
    const bytes = attachment?.data ? Buffer.from(attachment.data, 'base64').toString('utf8') : undefined;
    if (bytes !== submission.body || attachment?.hash !== submission.sha1 || sha1Base64(bytes) !== submission.sha1)
      return {
        kind: 'failed',
        step: 'read-back',
        status: 502,
        message: 'the copy the EHR holds differs from what would be sent; nothing was sent to the payer',
      };
    return undefined;
  }
}

function failed(step: 'write' | 'provenance' | 'read-back', error: unknown): CopyResult {
  const upstream = error instanceof DtrError ? Number(error.details['status'] ?? 0) : 0;
  const status = error instanceof DtrError && error.code === 'UPSTREAM_TIMEOUT' ? 504 : upstream;
  const what =
    step === 'write' ? 'store the copy' : step === 'provenance' ? 'store its provenance' : 'read the copy back';
  return {
    kind: 'failed',
    step,
    status: status === 401 || status === 403 ? 403 : status === 504 ? 504 : 502,
    message:
      status === 401 || status === 403
        ? `the EHR refused to ${what} with the disclosure identity; nothing was sent to the payer`
        : `the EHR could not ${what}; nothing was sent to the payer`,
  };
}

function documentReferenceOf(submission: Submission, ctx: CopyContext): FhirResource {
  const qr = `QuestionnaireResponse/${submission.qrEhrId}${submission.qrVersionId ? `/_history/${submission.qrVersionId}` : ''}`;
  return {
    resourceType: 'DocumentReference',
    identifier: [{ system: SUBMISSION_SYSTEM, value: submission.id }],
    status: 'current',
    docStatus: 'final',
    type: { coding: [DOCUMENT_TYPE] },
    subject: { reference: ctx.patient },
    date: ctx.now.toISOString(),
    ...(ctx.author ? { author: [{ reference: ctx.author }] } : {}),
    description: `Documentation sent to ${ctx.payerName} (DTR, ${submission.route})`,
    content: [
      {
        attachment: {
          contentType: 'application/fhir+json',
          data: Buffer.from(submission.body, 'utf8').toString('base64'),
          hash: submission.sha1,
          size: Buffer.byteLength(submission.body, 'utf8'),
          title: 'Payer-bound DTR documentation',
          creation: ctx.now.toISOString(),
        },
      },
    ],
    context: { related: [{ reference: qr }, ...(ctx.order ? [{ reference: ctx.order }] : [])] },
  };
}

function provenanceOf(submission: Submission, documentReference: string, ctx: CopyContext): FhirResource {
  return {
    resourceType: 'Provenance',
    target: [
      { reference: documentReference },
      {
        reference: `QuestionnaireResponse/${submission.qrEhrId}${submission.qrVersionId ? `/_history/${submission.qrVersionId}` : ''}`,
      },
    ],
    recorded: ctx.now.toISOString(),
    activity: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: 'CREATE' }] },
    agent: [
      ...(ctx.author
        ? [
            {
              type: {
                coding: [
                  { system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'author' },
                ],
              },
              who: { reference: ctx.author },
            },
          ]
        : []),
      {
        type: {
          coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'assembler' }],
        },
        who: { identifier: { system: 'urn:dtr-backend:client', value: ctx.discloseClientId }, display: 'DTR backend' },
      },
    ],
  };
}
