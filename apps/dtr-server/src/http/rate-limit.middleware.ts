import { DtrError } from '@dtr/kernel';
import type { NextFunction, Request, Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { sendErrorPage } from './error-page.js';

export interface RateLimit {
  /** Requests allowed per client address per window. */
  max: number;
  windowMs: number;
}

/** Past this many tracked addresses, windows that ended are swept before a new one is added. */
const SWEEP_AT = 10_000;

/**
 * A fixed-window limit per client address (`req.ip`: the peer, or the proxy's `X-Forwarded-For` when
 * DTR_TRUST_PROXY is on), counted by this instance. Past the limit: 429 with `Retry-After` (seconds until the window
 * ends) and a readable page, before any work is done for the request.
 */
export function rateLimitMiddleware(limit: RateLimit, logger: JsonLogger, now: () => number = Date.now) {
  const windows = new Map<string, { start: number; count: number }>();
  return (req: Request, res: Response, next: NextFunction): void => {
    const at = now();
    const address = req.ip ?? req.socket.remoteAddress ?? 'unknown';
    let window = windows.get(address);
    if (!window || at - window.start >= limit.windowMs) {
      if (!window && windows.size >= SWEEP_AT) {
        for (const [key, value] of windows) if (at - value.start >= limit.windowMs) windows.delete(key);
      }
      window = { start: at, count: 0 };
      windows.set(address, window);
    }
    window.count++;
    if (window.count <= limit.max) {
      next();
      return;
    }
    const retryAfter = Math.max(1, Math.ceil((window.start + limit.windowMs - at) / 1000));
    res.setHeader('Retry-After', String(retryAfter));
    sendErrorPage(
      res,
      new DtrError('TOO_MANY_REQUESTS', `too many launches from this address; try again in ${retryAfter} seconds`),
      logger,
      'Too many launches',
    );
  };
}
