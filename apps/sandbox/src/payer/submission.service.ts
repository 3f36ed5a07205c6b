import { createHash, randomUUID } from 'node:crypto';
import { type Bundle, type FhirResource, PayerHttpError, isResource, operationOutcome } from './fhir.types.js';

/** One submission as it arrived, in arrival order. */
export interface ReceivedSubmission {
  id: string;
  at: string;
  /** Route name from the submission route table, e.g. `bundle`. */
  route: string;
  /** `Idempotency-Key` header, else the QuestionnaireResponse identifier (`system|value`). */
  idempotencyKey?: string;
  body: unknown;
  /** A repeat of an earlier submission (same key, same content): answered with the original result. */
  duplicate: boolean;
}

export interface SubmissionResult {
  status: number;
  body: FhirResource;
}

/**
 * A submission route: validates the body, returns the key it would use when the client sent no
 * `Idempotency-Key`, and builds the answer. PAS `Claim/$submit` and CDex `$submit-attachment` are further
 * entries of the same shape.
 */
export interface SubmissionRoute {
  name: string;
  method: 'POST';
  /** Path under the FHIR base. */
  path: string;
  /** The resource type whose `system/<type>.c` scope the route requires. */
  scopeType: string;
  validate(body: unknown): void;
  naturalKey(body: unknown): string | undefined;
  respond(body: unknown, submissionId: string): SubmissionResult;
}

/** Plain FHIR POST of the payer-bound collection Bundle (QuestionnaireResponse first). */
export const bundleSubmissionRoute: SubmissionRoute = {
  name: 'bundle',
  method: 'POST',
  path: '/Bundle',
  scopeType: 'QuestionnaireResponse',
  validate(body) {
    if (!isResource(body) || body.resourceType !== 'Bundle')
      throw new PayerHttpError(400, 'invalid', 'the body must be a Bundle');
    const bundle = body as Bundle;
    if (bundle.type !== 'collection') throw new PayerHttpError(400, 'invalid', 'the Bundle must be of type collection');
    const first = bundle.entry?.[0]?.resource;
    if (!isResource(first) || first.resourceType !== 'QuestionnaireResponse') {
      throw new PayerHttpError(400, 'invalid', 'the first entry must be a QuestionnaireResponse');
    }
  },
  naturalKey(body) {
    const qr = (body as Bundle).entry?.[0]?.resource;
    const id = qr?.['identifier'] as
      { system?: string; value?: string } | Array<{ system?: string; value?: string }> | undefined;
    const one = Array.isArray(id) ? id[0] : id;
    return one?.value ? `${one.system ?? ''}|${one.value}` : undefined;
  },
  respond(body, submissionId) {
    return {
      status: 201,
      body: { ...(body as Bundle), id: submissionId, meta: { lastUpdated: new Date().toISOString() } },
    };
  },
};

type Identifier = { system?: string; value?: string };
const keyOf = (id: Identifier | Identifier[] | undefined) => {
  const one = Array.isArray(id) ? id[0] : id;
  return one?.value ? `${one.system ?? ''}|${one.value}` : undefined;
};

/**
 * PAS `Claim/$submit`: a Bundle whose first entry is the Claim; answered with a Bundle whose first entry is the
 * ClaimResponse (the sandbox approves every request, with a preauthorization number).
 * @see https://hl7.org/fhir/us/davinci-pas/OperationDefinition-Claim-submit.html
 */
const pasSubmissionRoute: SubmissionRoute = {
  name: 'pas-claim-submit',
  method: 'POST',
  path: '/Claim/$submit',
  scopeType: 'Claim',
  validate(body) {
    if (!isResource(body) || body.resourceType !== 'Bundle')
      throw new PayerHttpError(400, 'invalid', 'Claim/$submit takes a Bundle');
    const claim = (body as Bundle).entry?.[0]?.resource;
    if (!isResource(claim) || claim.resourceType !== 'Claim')
      throw new PayerHttpError(400, 'invalid', 'the first entry of the Bundle must be the Claim');
    const info = claim['supportingInfo'] as Array<{ valueReference?: { reference?: string } }> | undefined;
    const refs = new Set((body as Bundle).entry?.map((e) => (e as { fullUrl?: string }).fullUrl));
    if (!info?.some((i) => i.valueReference?.reference && refs.has(i.valueReference.reference)))
      throw new PayerHttpError(400, 'invalid', 'the Claim must reference its supporting documentation in the Bundle');
  },
  naturalKey(body) {
    return keyOf((body as Bundle).entry?.[0]?.resource?.['identifier'] as Identifier[] | undefined);
  },
  respond(body, submissionId) {
    const claim = (body as Bundle).entry![0]!.resource!;
    const response: FhirResource = {
      resourceType: 'ClaimResponse',
      id: submissionId,
      status: 'active',
      type: claim['type'],
      use: 'preauthorization',
      patient: claim['patient'],
      created: new Date().toISOString(),
      insurer: { display: 'Sandbox Health Plan' },
      request: { identifier: (claim['identifier'] as Identifier[] | undefined)?.[0] },
      outcome: 'complete',
      disposition: 'approved',
      preAuthRef: `PA-${createHash('sha256').update(submissionId).digest('hex').slice(0, 10)}`,
    };
    return { status: 200, body: { resourceType: 'Bundle', type: 'collection', entry: [{ resource: response }] } };
  },
};

/**
 * CDex `$submit-attachment`: Parameters with a TrackingId and at least one Attachment whose Content is a resource;
 * answered 200 with an informational OperationOutcome.
 * @see https://hl7.org/fhir/us/davinci-cdex/OperationDefinition-submit-attachment.html
 */
const cdexSubmissionRoute: SubmissionRoute = {
  name: 'cdex-submit-attachment',
  method: 'POST',
  path: '/$submit-attachment',
  scopeType: 'DocumentReference',
  validate(body) {
    if (!isResource(body) || body.resourceType !== 'Parameters')
      throw new PayerHttpError(400, 'invalid', '$submit-attachment takes Parameters');
    const params =
      (body['parameter'] as Array<{ name?: string; part?: Array<{ name?: string; resource?: unknown }> }>) ?? [];
    if (!params.some((p) => p.name === 'TrackingId'))
      throw new PayerHttpError(400, 'required', 'TrackingId is required');
    const attachment = params.find((p) => p.name === 'Attachment');
    if (!attachment?.part?.some((p) => p.name === 'Content' && isResource(p.resource)))
      throw new PayerHttpError(400, 'required', 'an Attachment with a Content resource is required');
  },
  naturalKey(body) {
    const params = (body as { parameter?: Array<{ name?: string; valueIdentifier?: Identifier }> }).parameter ?? [];
    return keyOf(params.find((p) => p.name === 'TrackingId')?.valueIdentifier);
  },
  respond() {
    return { status: 200, body: operationOutcome('information', 'informational', 'attachment received') };
  },
};

export const SUBMISSION_ROUTES: readonly SubmissionRoute[] = [
  bundleSubmissionRoute,
  pasSubmissionRoute,
  cdexSubmissionRoute,
];

/** Canonical JSON (sorted keys) so a repeat is recognised whatever the key order. */
function contentHash(body: unknown): string {
  const canon = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canon)
      : typeof v === 'object' && v !== null
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, canon((v as Record<string, unknown>)[k])]),
          )
        : v;
  return createHash('sha256')
    .update(JSON.stringify(canon(body)))
    .digest('hex');
}

/**
 * Records every submission and applies the idempotency rule: same key and same content answers the
 * original result again (recorded with `duplicate: true`); same key with different content is a 422.
 */
export class SubmissionLedger {
  private readonly received: ReceivedSubmission[] = [];
  private readonly byKey = new Map<string, { hash: string; result: SubmissionResult }>();

  submit(route: SubmissionRoute, body: unknown, idempotencyHeader?: string): SubmissionResult {
    route.validate(body);
    const key = idempotencyHeader && idempotencyHeader.length > 0 ? idempotencyHeader : route.naturalKey(body);
    const hash = contentHash(body);
    const scopedKey = key === undefined ? undefined : `${route.name}\u0000${key}`;
    const prior = scopedKey === undefined ? undefined : this.byKey.get(scopedKey);
    if (prior && prior.hash !== hash) {
      throw new PayerHttpError(422, 'business-rule', 'this idempotency key was already used for different content');
    }
    const id = randomUUID();
    this.received.push({
      id,
      at: new Date().toISOString(),
      route: route.name,
      ...(key !== undefined ? { idempotencyKey: key } : {}),
      body,
      duplicate: prior !== undefined,
    });
    if (prior) return { status: 200, body: prior.result.body };
    const result = route.respond(body, id);
    if (scopedKey !== undefined) this.byKey.set(scopedKey, { hash, result });
    return result;
  }

  all(): ReceivedSubmission[] {
    return [...this.received];
  }
}
