import { describe, expect, it } from 'vitest';
import { JsonLogger } from './json-logger.js';
import { requestContext } from './request-context.js';

function capture(level: 'info' | 'debug' = 'info') {
  const lines: Array<Record<string, unknown>> = [];
  const logger = new JsonLogger(level, (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  return { logger, lines };
}

describe('JsonLogger', () => {
  it('writes one JSON object per line with the request id of the current request', () => {
    const { logger, lines } = capture();
    requestContext.run({ requestId: 'abc-123-def' }, () => logger.info('hello', { count: 2 }, 'Test'));
    logger.info('outside');
    expect(lines[0]).toMatchObject({
      level: 'info',
      msg: 'hello',
      count: 2,
      context: 'Test',
      requestId: 'abc-123-def',
    });
    expect(lines[1]).not.toHaveProperty('requestId');
  });

  it('follows Nest calling conventions (context last, stack for errors)', () => {
    const { logger, lines } = capture();
    logger.error('boom', 'Error: boom\n    at x', 'ExceptionsHandler');
    logger.log('mapped', 'RouterExplorer');
    expect(lines[0]).toMatchObject({
      level: 'error',
      msg: 'boom',
      stack: 'Error: boom\n    at x',
      context: 'ExceptionsHandler',
    });
    expect(lines[1]).toMatchObject({ level: 'info', msg: 'mapped', context: 'RouterExplorer' });
  });

  it('drops entries below the configured level', () => {
    const { logger, lines } = capture('info');
    logger.debug('noise');
    logger.warn('kept');
    expect(lines.map((l) => l['msg'])).toEqual(['kept']);
  });
});
