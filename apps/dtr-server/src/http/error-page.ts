import { DtrError, html } from '@dtr/kernel';
import type { Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { currentRequestId } from '../logging/request-context.js';
import { retryAfterOf, toOperationOutcome } from './operation-outcome.js';

/**
 * Browser-facing errors (launch and callback): a readable page instead of JSON. The message is ours (DtrError)
 * and escaped; anything the authorization server sent is never reflected unescaped.
 */
export function sendErrorPage(res: Response, error: unknown, logger: JsonLogger, title = 'Sign-in failed'): void {
  const { status, body, internal } = toOperationOutcome(error);
  logger.entry(internal ? 'error' : 'warn', 'browser flow refused', {
    status,
    code: error instanceof DtrError ? error.code : undefined,
    error: internal && error instanceof Error ? error.message : undefined,
  });
  const message = body.issue[0]?.diagnostics ?? 'Something went wrong.';
  const requestId = currentRequestId();
  const retryAfter = retryAfterOf(error);
  if (retryAfter !== undefined) res.set('Retry-After', String(retryAfter));
  res
    .status(status)
    .type('text/html')
    .set('Cache-Control', 'no-store')
    .send(
      html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1><p id="message">${message}</p><p>Close this window and launch the app again from the EHR.${requestId ? html` Reference: <code>${requestId}</code>` : ''}</p></body></html>`
        .value,
    );
}
