import { DtrError } from '@dtr/kernel';
import type { NextFunction, Request, Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { answerUnread } from './body.middleware.js';
import { sendErrorPage } from './error-page.js';
import { sendError } from './operation-outcome.js';

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * Why a state-changing request is refused as coming from another site, or undefined when it may go on. The browser's
 * own word first: `Sec-Fetch-Site` (`same-origin`, or `none` for a user's own action, may go on; `same-site` and
 * `cross-site` may not: another port or subdomain is another origin). Without it, `Origin` must be ours: the public
 * URL's origin when configured, else the origin the request was addressed to. A request with neither header is not
 * a browser's (browsers send `Origin` on every POST, PUT, PATCH and DELETE): API clients with the admin token, the CLI
 * and peers go on. This is the rule of Go's `net/http.CrossOriginProtection` and of the Fetch Metadata guidance.
 * @see https://web.dev/articles/fetch-metadata
 */
function crossOriginRefusal(req: Request, publicOrigin: string | undefined): string | undefined {
  const site = req.headers['sec-fetch-site'];
  if (typeof site === 'string') {
    if (site === 'same-origin' || site === 'none') return undefined;
    return `this request came from another site (Sec-Fetch-Site: ${site.slice(0, 20)}); the app's forms and API are used from its own pages only`;
  }
  const origin = req.headers['origin'];
  if (origin === undefined) return undefined;
  const ours = publicOrigin ?? `${req.protocol}://${req.get('host') ?? ''}`;
  if (origin === ours) return undefined;
  return `this request came from another origin (${origin.slice(0, 200)}), not from ${ours}; the app's forms and API are used from its own pages only`;
}

/**
 * Refuses a cross-site POST, PUT, PATCH or DELETE before its body is read or any route sees it (cross-site request
 * forgery: a session cookie rides along on a request another site makes the browser send, SameSite=None ones above
 * all). 403: an error page for a page's form (the browser asked for HTML), an OperationOutcome otherwise.
 */
export function requestOriginMiddleware(publicUrl: string | undefined, logger: JsonLogger) {
  const publicOrigin = publicUrl ? new URL(publicUrl).origin : undefined;
  return (req: Request, res: Response, next: NextFunction): void => {
    if (!STATE_CHANGING.has(req.method)) return next();
    const refusal = crossOriginRefusal(req, publicOrigin);
    if (!refusal) return next();
    const error = new DtrError('FORBIDDEN', refusal);
    const page = req.accepts(['application/fhir+json', 'application/json', 'text/html']) === 'text/html';
    answerUnread(req, res, () =>
      page ? sendErrorPage(res, error, logger, 'Request refused') : sendError(res, error, logger),
    );
  };
}
