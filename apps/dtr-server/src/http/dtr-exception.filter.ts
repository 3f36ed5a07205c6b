import { type ArgumentsHost, Catch, type ExceptionFilter } from '@nestjs/common';
import { DtrError } from '@dtr/kernel';
import type { Request, Response } from 'express';
import { sendErrorPage } from './error-page.js';
import type { JsonLogger } from '../logging/json-logger.js';
import { sendError } from './operation-outcome.js';

/** Global filter: every error leaving a route becomes an OperationOutcome (see operation-outcome.ts). */
@Catch()
export class DtrExceptionFilter implements ExceptionFilter {
  constructor(private readonly logger: JsonLogger) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const req = http.getRequest<Request>();
    const res = http.getResponse<Response>();
    // A page (not the JSON API) opened without a live session: a readable page saying so, still a 401.
    if (
      DtrError.is(exception, 'UNAUTHENTICATED') &&
      req.method === 'GET' &&
      /^\/app(\/|$)/.test(req.path) &&
      req.accepts(['json', 'html']) === 'html'
    ) {
      const ended = (req as Request & { sessionEnded?: boolean }).sessionEnded;
      sendErrorPage(res, exception, this.logger, ended ? 'Session expired' : 'Not signed in');
      return;
    }
    sendError(res, exception, this.logger);
  }
}
