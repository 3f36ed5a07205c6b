import { type ArgumentsHost, Catch, type ExceptionFilter } from '@nestjs/common';
import type { Response } from 'express';
import type { JsonLogger } from '../logging/json-logger.js';
import { sendError } from './operation-outcome.js';

/** Global filter: every error leaving a route becomes an OperationOutcome (see operation-outcome.ts). */
@Catch()
export class DtrExceptionFilter implements ExceptionFilter {
  constructor(private readonly logger: JsonLogger) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    sendError(host.switchToHttp().getResponse<Response>(), exception, this.logger);
  }
}
