import type { DeliveryResult, DeliverySender, Submission } from '@dtr/disclosure';
import { readCapped } from '@dtr/fhir';
import { DtrError, parseUntrustedJson } from '@dtr/kernel';
import { backendServicesRegistration, mutualTlsFetch, type PayerRegistry } from '@dtr/payer';
import { assertOutboundUrl, type BackendServicesClient, type OutboundPolicy, outboundFetch } from '@dtr/smart';

/** Answers larger than this are not read further (the payer's answer is kept, not its attachments). */
const MAX_ANSWER_BYTES = 2 * 1024 * 1024;

/**
 * Sends a queued submission to its payer: the exact stored bytes, our Backend Services token (never an EHR token),
 * `Idempotency-Key` = the submission id (the same on every attempt, so a payer that honours it takes the submission
 * once however often it arrives), on the payer's own FHIR base only. 2xx is accepted; 429, 5xx, timeouts and
 * dropped connections are retried; other 4xx are the payer refusing the content (dead letter, no retry).
 */
export class PayerDelivery implements DeliverySender {
  constructor(
    private readonly payers: PayerRegistry,
    private readonly tokens: BackendServicesClient,
    private readonly policy: OutboundPolicy,
    private readonly timeoutMs: number,
  ) {}

  async send(submission: Submission): Promise<DeliveryResult> {
    const payer = await this.payers.get(submission.payerId);
    if (!payer) return { kind: 'rejected', status: 0, error: `payer ${submission.payerId} is no longer registered` };
    const url = `${payer.fhirBase.replace(/\/+$/, '')}/${submission.path}`;
    assertOutboundUrl(url, this.policy, `payer ${payer.id} submission endpoint`);
    const tls = await this.payers.tlsCredentials(payer.id);
    const connection: typeof fetch = tls ? mutualTlsFetch(tls, this.policy) : outboundFetch(this.policy);
    let response: Response;
    try {
      const token = await this.tokens.token(backendServicesRegistration(payer, tls ? connection : undefined));
      response = await connection(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/fhir+json',
          accept: 'application/fhir+json',
          authorization: `Bearer ${token}`,
          'idempotency-key': submission.id,
        },
        body: submission.body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      // Our own configuration stands in the way (a cancelled UDAP registration): its plain words, kept for a retry
      // once an administrator has registered again; the operator's message is in the log.
      if (DtrError.is(error) && error.userMessage) return { kind: 'retry', error: error.userMessage };
      const timedOut = error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError');
      return { kind: 'retry', error: timedOut ? 'the payer did not answer in time' : 'the payer could not be reached' };
    }
    // The payer's status decides; an answer too large to keep is dropped (its status still counts).
    const text = await readCapped(response, MAX_ANSWER_BYTES, url).catch(() => '');
    const answer = parseAnswer(text);
    if (response.ok)
      return { kind: 'accepted', status: response.status, outcome: outcomeOf(answer), answer: answer ?? {} };
    if (response.status === 429 || response.status === 408 || response.status >= 500)
      return {
        kind: 'retry',
        status: response.status,
        error: `the payer answered ${response.status}`,
        ...retryAfter(response.headers.get('retry-after')),
      };
    return {
      kind: 'rejected',
      status: response.status,
      error: `the payer refused the submission (${response.status})`,
      ...(answer ? { answer } : {}),
    };
  }
}

function parseAnswer(text: string): Record<string, unknown> | undefined {
  if (!text) return undefined;
  try {
    const value = parseUntrustedJson(text, { maxDepth: 64, maxBytes: MAX_ANSWER_BYTES }) as unknown;
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** A short, PHI-free summary of the payer's answer: the ClaimResponse decision, or what was accepted. */
function outcomeOf(answer: Record<string, unknown> | undefined): string {
  const claimResponse =
    answer?.['resourceType'] === 'ClaimResponse'
      ? answer
      : (answer?.['entry'] as Array<{ resource?: Record<string, unknown> }> | undefined)?.find(
          (e) => e.resource?.['resourceType'] === 'ClaimResponse',
        )?.resource;
  if (claimResponse) {
    const parts = [claimResponse['outcome'], claimResponse['disposition'], claimResponse['preAuthRef']].filter(
      (p): p is string => typeof p === 'string' && p.length > 0,
    );
    return `decision: ${parts.join(', ') || 'received'}`.slice(0, 200);
  }
  return 'accepted';
}

function retryAfter(value: string | null): { retryAfterMs?: number } {
  if (!value) return {};
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return { retryAfterMs: Math.min(seconds, 3600) * 1000 };
  const date = Date.parse(value);
  return Number.isNaN(date) ? {} : { retryAfterMs: Math.max(0, Math.min(date - Date.now(), 3_600_000)) };
}
