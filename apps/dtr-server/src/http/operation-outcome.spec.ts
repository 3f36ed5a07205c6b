import { NotFoundException, PayloadTooLargeException } from '@nestjs/common';
import { DtrError } from '@dtr/kernel';
import { describe, expect, it } from 'vitest';
import { requestContext } from '../logging/request-context.js';
import { toOperationOutcome } from './operation-outcome.js';

describe('toOperationOutcome', () => {
  it('maps DtrError codes to status and issue type, keeping the message and location', () => {
    const result = toOperationOutcome(new DtrError('INVALID_INPUT', 'bad thing', { expression: ['$.a'] }));
    expect(result.status).toBe(400);
    expect(result.body).toEqual({
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'invalid', diagnostics: 'bad thing', expression: ['$.a'] }],
    });
    expect(toOperationOutcome(new DtrError('FORBIDDEN', 'no')).status).toBe(403);
    expect(toOperationOutcome(new DtrError('UPSTREAM_TIMEOUT', 'payer did not answer')).body.issue[0]).toMatchObject({
      code: 'timeout',
      diagnostics: 'payer did not answer',
    });
  });

  it('maps Nest HTTP exceptions', () => {
    expect(toOperationOutcome(new NotFoundException('Cannot GET /nope')).body.issue[0]).toMatchObject({
      code: 'not-found',
      diagnostics: 'Cannot GET /nope',
    });
    expect(toOperationOutcome(new PayloadTooLargeException()).status).toBe(413);
  });

  it('hides the details of unknown errors and of internal DtrErrors behind the request id', () => {
    const secret = 'connection to postgres://dtr:hunter2@db failed';
    for (const error of [new Error(secret), new DtrError('INTERNAL', secret), 'a string']) {
      const result = requestContext.run({ requestId: 'req-12345678' }, () => toOperationOutcome(error));
      expect(result.status).toBe(500);
      expect(JSON.stringify(result.body)).not.toContain('hunter2');
      expect(result.body.issue[0]?.diagnostics).toContain('req-12345678');
    }
  });

  it("tells a user a configuration error's plain words when it has them, never the operator's instructions", () => {
    const error = new DtrError('CONFIGURATION', 'run "dtr payer register-udap p1 --san <uri>"', {
      userMessage: 'Payer One cannot be reached: an administrator must register this service with it again',
    });
    const result = requestContext.run({ requestId: 'req-12345678' }, () => toOperationOutcome(error));
    expect(result).toMatchObject({ status: 500, internal: true });
    expect(result.body.issue).toEqual([
      {
        severity: 'error',
        code: 'exception',
        diagnostics:
          'Payer One cannot be reached: an administrator must register this service with it again (request id req-12345678)',
      },
    ]);
    // Without plain words, only that an internal error occurred.
    const bare = toOperationOutcome(new DtrError('CONFIGURATION', 'run "dtr tenant put"'));
    expect(JSON.stringify(bare.body)).not.toContain('dtr tenant put');
  });
});
