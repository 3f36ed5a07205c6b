import { DtrError } from '@dtr/kernel';
import type { NextFunction, Request, Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { sendError } from './operation-outcome.js';

/** A NUL or other C0 control character, or a lone surrogate, once percent-decoded. */
const UNSAFE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]|[\ud800-\udfff]/u;

function decoded(value: string): string | undefined {
  try {
    return decodeURIComponent(value);
  } catch {
    return undefined;
  }
}

/**
 * Refuses (400, before any route) a request whose path or query, percent-decoded, is not decodable or carries NUL or
 * another control character: no id, iss, tenant or search value of ours may hold one, and PostgreSQL cannot store a
 * NUL in text. Bodies get the same refusal from the body reader.
 */
export function urlCheckMiddleware(logger: JsonLogger) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const [path = '', query = ''] = req.originalUrl.split('?', 2);
    const parts = [path, ...query.split('&').flatMap((pair) => pair.replace(/\+/g, ' ').split('='))];
    for (const part of parts) {
      const text = decoded(part);
      if (text === undefined || UNSAFE.test(text)) {
        sendError(
          res,
          new DtrError('INVALID_INPUT', 'the request URL holds an invalid percent-encoding or a control character'),
          logger,
        );
        return;
      }
    }
    next();
  };
}
