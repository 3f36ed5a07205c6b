import { HttpException } from '@nestjs/common';
import { DtrError } from '@dtr/kernel';
import type { Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { currentRequestId } from '../logging/request-context.js';

export interface OperationOutcome {
  resourceType: 'OperationOutcome';
  issue: Array<{
    severity: 'fatal' | 'error' | 'warning' | 'information';
    code: string;
    diagnostics?: string;
    expression?: string[];
  }>;
}

const ISSUE_BY_STATUS: Record<number, string> = {
  400: 'invalid',
  401: 'login',
  403: 'forbidden',
  404: 'not-found',
  405: 'not-supported',
  406: 'not-supported',
  409: 'conflict',
  410: 'deleted',
  413: 'too-costly',
  415: 'not-supported',
  422: 'processing',
  429: 'throttled',
};

/**
 * Turns any error into an HTTP status and a FHIR OperationOutcome. The single place where errors become
 * responses: the exception filter and the edge middleware both call it.
 * @see https://hl7.org/fhir/R4/operationoutcome.html
 */
export function toOperationOutcome(error: unknown): { status: number; body: OperationOutcome; internal: boolean } {
  if (error instanceof DtrError && error.httpStatus < 500) {
    return {
      status: error.httpStatus,
      internal: false,
      body: outcome(error.issueType, error.message, error.expression.length > 0 ? [...error.expression] : undefined),
    };
  }
  if (error instanceof DtrError && error.publicMessage !== undefined) {
    // Upstream and availability errors, and our own faults that say what a user may know of them: the message is ours
    // and safe (never the upstream's text, never the operator's instructions); the request id lets an operator find the
    // log line with the whole message, the upstream status and code.
    const requestId = currentRequestId();
    return {
      status: error.httpStatus,
      internal: true,
      body: outcome(error.issueType, `${error.publicMessage}${requestId ? ` (request id ${requestId})` : ''}`),
    };
  }
  if (error instanceof HttpException && error.getStatus() < 500) {
    const status = error.getStatus();
    return { status, internal: false, body: outcome(ISSUE_BY_STATUS[status] ?? 'processing', httpMessage(error)) };
  }
  const requestId = currentRequestId();
  return {
    status: 500,
    internal: true,
    body: outcome(
      'exception',
      `An internal error occurred${requestId ? `; quote request id ${requestId} when reporting it` : ''}.`,
    ),
  };
}

function outcome(code: string, diagnostics: string, expression?: string[]): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, diagnostics, ...(expression ? { expression } : {}) }],
  };
}

function httpMessage(error: HttpException): string {
  const response = error.getResponse();
  if (typeof response === 'string') return response;
  const message = (response as { message?: unknown }).message;
  if (Array.isArray(message)) return message.map(String).join('; ');
  if (typeof message === 'string') return message;
  return error.message;
}

/**
 * What a log line says of an error's origin: our code, the upstream's HTTP status and short reason when a peer failed,
 * and the cause's type and system code. Never a cause's message: a parser's or a peer's text can quote the upstream
 * body (PHI, tokens).
 */
export function problemFields(error: unknown): Record<string, string | number | undefined> {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : undefined;
  const details = error instanceof DtrError ? error.details : {};
  const code = (cause as { code?: unknown } | undefined)?.code;
  return {
    code: error instanceof DtrError ? error.code : undefined,
    upstreamStatus: typeof details['status'] === 'number' ? details['status'] : undefined,
    oauthError: typeof details['oauthError'] === 'string' ? details['oauthError'] : undefined,
    cause: cause ? `${cause.name}${typeof code === 'string' ? ` ${code}` : ''}` : undefined,
  };
}

/** Seconds after which a refused request may be tried again (a full queue says so), for `Retry-After`. */
export function retryAfterOf(error: unknown): number | undefined {
  const seconds = error instanceof DtrError ? error.details['retryAfterSeconds'] : undefined;
  return typeof seconds === 'number' && Number.isInteger(seconds) && seconds > 0 ? seconds : undefined;
}

/** Writes the error response and logs it: 5xx with the cause and stack, 4xx as a one-line warning. */
export function sendError(res: Response, error: unknown, logger: JsonLogger): void {
  const { status, body, internal } = toOperationOutcome(error);
  if (internal) {
    logger.entry('error', error instanceof Error ? error.message : 'non-error thrown', {
      status,
      error: error instanceof Error ? error.name : typeof error,
      ...problemFields(error),
      stack: error instanceof Error ? error.stack : undefined,
    });
  } else {
    logger.entry('warn', 'request refused', {
      status,
      code: error instanceof DtrError ? error.code : undefined,
      issue: body.issue[0]?.code,
    });
  }
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const retryAfter = retryAfterOf(error);
  if (retryAfter !== undefined) res.set('Retry-After', String(retryAfter));
  res.status(status).type('application/fhir+json').send(JSON.stringify(body));
}
