import { AsyncResource } from 'node:async_hooks';
import { DtrError, parseUntrustedJson } from '@dtr/kernel';
import type { NextFunction, Request, Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { sendError } from './operation-outcome.js';

export interface BodyLimits {
  maxBytes: number;
  maxDepth: number;
}

const JSON_TYPES = /^application\/(?:[\w.+-]+\+)?json$/;
const FORM_TYPE = 'application/x-www-form-urlencoded';
/** Past this much refused upload, stop reading and drop the connection. */
const MAX_DRAIN_BYTES = 64 * 1024 * 1024;

/**
 * Reads request bodies at the edge, before any route sees them:
 * JSON (`application/json`, `application/fhir+json`, any `+json`) and URL-encoded forms are accepted;
 * anything larger than `maxBytes` is refused with 413 as soon as that is known (Content-Length first,
 * counted bytes otherwise); JSON deeper than `maxDepth`, with `__proto__` keys or NUL characters, or not
 * UTF-8, is refused with 400; other media types with 415. Errors are OperationOutcomes.
 */
export function bodyMiddleware(limits: BodyLimits, logger: JsonLogger) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const length = req.headers['content-length'];
    const chunked = req.headers['transfer-encoding'] !== undefined;
    if (!chunked && (length === undefined || length === '0')) {
      next();
      return;
    }
    const mediaType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const isJson = JSON_TYPES.test(mediaType);
    const refuse = (error: DtrError) => answerUnread(req, res, () => sendError(res, error, logger));
    if (!isJson && mediaType !== FORM_TYPE) {
      refuse(
        new DtrError(
          'UNSUPPORTED_MEDIA_TYPE',
          `request bodies must be application/json, application/fhir+json or ${FORM_TYPE}`,
        ),
      );
      return;
    }
    if (length !== undefined && Number(length) > limits.maxBytes) {
      refuse(tooLarge(limits.maxBytes));
      return;
    }
    const chunks: Buffer[] = [];
    let received = 0;
    let done = false;
    // Stream events fire outside the request's async context: bind them so logs and `next()` keep the request id.
    const onData = AsyncResource.bind((chunk: Buffer) => {
      received += chunk.length;
      if (received > limits.maxBytes) {
        done = true;
        req.off('data', onData);
        refuse(tooLarge(limits.maxBytes));
        return;
      }
      chunks.push(chunk);
    });
    req.on('data', onData);
    req.once(
      'error',
      AsyncResource.bind((cause: Error) => {
        if (done) return;
        done = true;
        refuse(new DtrError('INVALID_INPUT', 'the request body could not be read', { cause }));
      }),
    );
    req.once(
      'end',
      AsyncResource.bind(() => {
        if (done) return;
        done = true;
        try {
          const text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
          req.body = isJson ? parseUntrustedJson(text, limits) : parseForm(text);
        } catch (error) {
          sendError(
            res,
            error instanceof DtrError
              ? error
              : new DtrError('INVALID_INPUT', 'the request body is not valid UTF-8', { cause: error }),
            logger,
          );
          return;
        }
        next();
      }),
    );
  };
}

/**
 * Answers a request whose body is not wanted. Answering while the client is still uploading makes it fail with EPIPE
 * before it reads the answer: the rest of the upload is drained first (up to a bound), then `answer` runs and the
 * connection is closed.
 */
export function answerUnread(req: Request, res: Response, answer: () => void): void {
  res.setHeader('Connection', 'close');
  let drained = 0;
  let answered = false;
  // Stream events fire outside the request's async context: bound, so the answer's log lines keep the request id.
  const once = AsyncResource.bind(() => {
    if (answered) return;
    answered = true;
    answer();
  });
  if (req.readableEnded) return once();
  req.on('data', (chunk: Buffer) => {
    drained += chunk.length;
    if (drained > MAX_DRAIN_BYTES) {
      once();
      req.destroy();
    }
  });
  req.once('end', once);
  req.once('error', once);
  req.resume();
}

function tooLarge(maxBytes: number): DtrError {
  return new DtrError('PAYLOAD_TOO_LARGE', `the request body exceeds the limit of ${maxBytes} bytes`, {
    details: { limitBytes: maxBytes },
  });
}

function parseForm(text: string): Record<string, string> {
  const form: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [key, value] of new URLSearchParams(text)) {
    if (key === '__proto__' || key.includes('\u0000') || value.includes('\u0000')) {
      throw new DtrError('INVALID_INPUT', 'forbidden key or NUL character in form body');
    }
    form[key] = value;
  }
  return form;
}
