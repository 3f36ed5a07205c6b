import { html } from '@dtr/kernel';
import type { Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { currentRequestId } from '../logging/request-context.js';
import { problemFields, retryAfterOf, toOperationOutcome } from './operation-outcome.js';

const RELAUNCH = 'Close this window and launch the app again from the EHR.';

/**
 * Browser-facing errors (launch and callback, refused page forms): a readable page instead of JSON. The message is
 * ours (DtrError) and escaped; what a peer sent (an `iss`, the EHR's `error_description`) is only ever shown escaped.
 * The log line carries the message (with the request id the page quotes), so an administrator can match the two.
 */
export function sendErrorPage(
  res: Response,
  error: unknown,
  logger: JsonLogger,
  title = 'Sign-in failed',
  hint = RELAUNCH,
): void {
  const { status, body, internal } = toOperationOutcome(error);
  const message = body.issue[0]?.diagnostics ?? 'Something went wrong.';
  logger.entry(internal ? 'error' : 'warn', 'browser flow refused', {
    status,
    ...problemFields(error),
    error: internal && error instanceof Error ? error.message : undefined,
    message: internal ? undefined : message,
  });
  const requestId = currentRequestId();
  const retryAfter = retryAfterOf(error);
  if (retryAfter !== undefined) res.set('Retry-After', String(retryAfter));
  res
    .status(status)
    .type('text/html')
    .set('Cache-Control', 'no-store')
    .send(
      html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1><p id="message">${message}</p><p>${hint}${requestId ? html` Reference: <code>${requestId}</code>` : ''}</p></body></html>`
        .value,
    );
}
