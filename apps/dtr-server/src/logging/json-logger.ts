import type { LoggerService } from '@nestjs/common';
import type { LogLevel } from '../config/app.config.js';
import { currentRequestId } from './request-context.js';

const RANK: Record<LogLevel, number> = { fatal: 60, error: 50, warn: 40, info: 30, debug: 20 };

export type LogFields = Record<string, string | number | boolean | null | undefined>;

/**
 * Structured JSON logs, one object per line, each carrying the request id of the request that caused it.
 * Callers log references and counts, never bodies, tokens, secrets, codes or `state` values.
 */
export class JsonLogger implements LoggerService {
  constructor(
    private readonly level: LogLevel = 'info',
    private readonly write: (line: string) => void = (line) => process.stdout.write(line),
  ) {}

  log(message: unknown, ...rest: unknown[]): void {
    this.emit('info', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.emit('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.emit('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.emit('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.emit('debug', message, rest);
  }
  fatal(message: unknown, ...rest: unknown[]): void {
    this.emit('fatal', message, rest);
  }

  /** Structured entry point for our own code. */
  info(message: string, fields: LogFields = {}, context?: string): void {
    this.entry('info', message, fields, context);
  }

  entry(level: LogLevel, message: string, fields: LogFields = {}, context?: string): void {
    if (RANK[level] < RANK[this.level]) return;
    const line: Record<string, unknown> = { time: new Date().toISOString(), level, msg: message };
    const requestId = currentRequestId();
    if (requestId) line['requestId'] = requestId;
    if (context) line['context'] = context;
    for (const [key, value] of Object.entries(fields)) if (value !== undefined) line[key] = value;
    this.write(`${JSON.stringify(line)}\n`);
  }

  /** Adapts Nest's calling convention: (message, ...optionalParams, context?) and (message, stack, context) for errors. */
  private emit(level: LogLevel, message: unknown, rest: unknown[]): void {
    if (RANK[level] < RANK[this.level]) return;
    const params = [...rest];
    const context = typeof params[params.length - 1] === 'string' ? (params.pop() as string) : undefined;
    const fields: LogFields = {};
    let text: string;
    if (message instanceof Error) {
      text = message.message;
      fields['error'] = message.name;
      fields['stack'] = message.stack;
    } else if (typeof message === 'object' && message !== null) {
      text = 'event';
      for (const [key, value] of Object.entries(message)) {
        if (['string', 'number', 'boolean'].includes(typeof value)) fields[key] = value as string | number | boolean;
      }
    } else {
      text = String(message);
    }
    if (level === 'error' && typeof params[0] === 'string') fields['stack'] = params.shift() as string;
    this.entry(level, text, fields, context);
  }
}
