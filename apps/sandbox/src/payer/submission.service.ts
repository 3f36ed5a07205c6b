import { createHash, randomUUID } from 'node:crypto';
import { type Bundle, type FhirResource, PayerHttpError, isResource } from './fhir.types.js';

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
  validate(body: unknown): void;
  naturalKey(body: unknown): string | undefined;
  respond(body: unknown, submissionId: string): SubmissionResult;
}

/** Plain FHIR POST of the payer-bound collection Bundle (QuestionnaireResponse first). */
export const bundleSubmissionRoute: SubmissionRoute = {
  name: 'bundle',
  method: 'POST',
  path: '/Bundle',
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

export const SUBMISSION_ROUTES: readonly SubmissionRoute[] = [bundleSubmissionRoute];

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
