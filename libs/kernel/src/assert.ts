import { DtrError, type DtrErrorCode } from './dtr-error.js';

/** Throws a DtrError with the given code when the condition does not hold. */
export function assertThat(condition: unknown, code: DtrErrorCode, message: string): asserts condition {
  if (!condition) throw new DtrError(code, message);
}

export function assertNonEmptyString(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new DtrError('INVALID_INPUT', `${what} must be a non-empty string`);
  }
}

export function assertNever(value: never, what = 'value'): never {
  throw new DtrError('INTERNAL', `unexpected ${what}: ${String(value)}`);
}
