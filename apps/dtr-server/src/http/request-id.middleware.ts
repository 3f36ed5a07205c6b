import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { requestContext } from '../logging/request-context.js';

const REQUEST_ID_HEADER = 'X-Request-Id';
const ACCEPTABLE_ID = /^[A-Za-z0-9._:-]{8,64}$/;

/**
 * Gives every request an id (the caller's `X-Request-Id` when it is well-formed, else a new UUID),
 * echoes it in the response, runs the rest of the request inside its context, and writes one access
 * line when the response is finished. The query string is never logged: it carries codes and state.
 */
export function requestIdMiddleware(logger: JsonLogger) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const inbound = req.headers['x-request-id'];
    const requestId = typeof inbound === 'string' && ACCEPTABLE_ID.test(inbound) ? inbound : randomUUID();
    res.setHeader(REQUEST_ID_HEADER, requestId);
    const started = process.hrtime.bigint();
    res.once('finish', () => {
      requestContext.run({ requestId }, () =>
        logger.entry(req.path.startsWith('/health/') ? 'debug' : 'info', 'request', {
          method: req.method,
          path: req.originalUrl.split('?')[0],
          status: res.statusCode,
          ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
        }),
      );
    });
    requestContext.run({ requestId }, next);
  };
}
