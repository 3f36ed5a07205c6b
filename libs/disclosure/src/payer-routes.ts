import type { FhirResource } from '@dtr/fhir';
import { SUBMISSION_SYSTEM } from './payer-copy.js';

/** How a payer takes completed documentation: plain FHIR POST of the Bundle, PAS `Claim/$submit`, CDex attachment. */
export type SubmissionRoute = 'bundle' | 'pas-claim-submit' | 'cdex-submit-attachment';

export interface RouteContext {
  submissionId: string;
  /** The pseudonymized collection Bundle (QR first). */
  qrBundle: FhirResource;
  patient: string;
  /** References as they appear in the pseudonymized QR (`Coverage/x`, `DeviceRequest/y`). */
  coverage?: string;
  order?: string;
  /** The order's codes, for the Claim item (PAS). */
  orderCodes: Array<{ system?: string; code?: string; display?: string }>;
  /** The payer's identifier (`system|value`) and the member id, for the attachment's parameters (CDex). */
  payerIdentifier?: string;
  memberId?: string;
  requester?: string;
  now: Date;
}

/** The request a route sends: a path under the payer's FHIR base and the body. */
export interface RouteRequest {
  path: string;
  body: FhirResource;
}

const PAS_SUPPORTING_INFO = 'http://hl7.org/us/davinci-pas/CodeSystem/PASSupportingInfoType';

function identifier(value: string | undefined): { system?: string; value: string } | undefined {
  if (!value) return undefined;
  const bar = value.indexOf('|');
  return bar < 0 ? { value } : { ...(bar > 0 ? { system: value.slice(0, bar) } : {}), value: value.slice(bar + 1) };
}

/**
 * The request of each route.
 * - `bundle`: `POST Bundle` with the QR Bundle itself.
 * - `pas-claim-submit`: `POST Claim/$submit` with a PAS request Bundle: a preauthorization Claim whose supportingInfo references
 *   the QR Bundle, carried in the same request Bundle.
 * - `cdex-submit-attachment`: `POST $submit-attachment` with the QR Bundle as the attachment's content, tracked by our submission id.
 * @see https://hl7.org/fhir/us/davinci-pas/ and https://hl7.org/fhir/us/davinci-cdex/OperationDefinition-submit-attachment.html
 */
export function routeRequest(route: SubmissionRoute, ctx: RouteContext): RouteRequest {
  if (route === 'bundle') return { path: 'Bundle', body: ctx.qrBundle };
  if (route === 'pas-claim-submit') return { path: 'Claim/$submit', body: pasBundle(ctx) };
  return { path: '$submit-attachment', body: attachmentParameters(ctx) };
}

function pasBundle(ctx: RouteContext): FhirResource {
  const bundleUrl = `urn:uuid:${ctx.submissionId}`;
  const claim: FhirResource = {
    resourceType: 'Claim',
    identifier: [{ system: SUBMISSION_SYSTEM, value: ctx.submissionId }],
    status: 'active',
    type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/claim-type', code: 'professional' }] },
    use: 'preauthorization',
    patient: { reference: ctx.patient },
    created: ctx.now.toISOString(),
    ...(ctx.requester ? { provider: { reference: ctx.requester } } : { provider: { display: 'ordering provider' } }),
    priority: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/processpriority', code: 'normal' }] },
    ...(ctx.order ? { referral: { reference: ctx.order } } : {}),
    supportingInfo: [
      {
        sequence: 1,
        category: { coding: [{ system: PAS_SUPPORTING_INFO, code: 'additionalInformation' }] },
        valueReference: { reference: bundleUrl },
      },
    ],
    insurance: ctx.coverage ? [{ sequence: 1, focal: true, coverage: { reference: ctx.coverage } }] : [],
    item: [
      {
        sequence: 1,
        informationSequence: [1],
        productOrService: { coding: ctx.orderCodes.length > 0 ? ctx.orderCodes : [{ code: 'unknown' }] },
      },
    ],
  };
  return {
    resourceType: 'Bundle',
    identifier: { system: SUBMISSION_SYSTEM, value: ctx.submissionId },
    type: 'collection',
    timestamp: ctx.now.toISOString(),
    entry: [
      { fullUrl: `urn:uuid:claim-${ctx.submissionId}`, resource: claim },
      { fullUrl: bundleUrl, resource: ctx.qrBundle },
    ],
  };
}

function attachmentParameters(ctx: RouteContext): FhirResource {
  const payer = identifier(ctx.payerIdentifier);
  const member = identifier(ctx.memberId);
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'TrackingId', valueIdentifier: { system: SUBMISSION_SYSTEM, value: ctx.submissionId } },
      { name: 'AttachTo', valueCode: 'preauthorization' },
      ...(payer ? [{ name: 'PayerId', valueIdentifier: payer }] : []),
      ...(member ? [{ name: 'MemberId', valueIdentifier: member }] : []),
      {
        name: 'Attachment',
        part: [
          { name: 'LineItem', valueString: '1' },
          { name: 'Content', resource: ctx.qrBundle },
        ],
      },
    ],
  };
}
