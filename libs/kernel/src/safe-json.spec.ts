import { describe, expect, it } from 'vitest';
import { DtrError } from './dtr-error.js';
import { parseUntrustedJson } from './safe-json.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    return error instanceof DtrError ? error.code : 'NOT_A_DTR_ERROR';
  }
}

describe('parseUntrustedJson', () => {
  it('parses ordinary FHIR JSON unchanged', () => {
    const resource = { resourceType: 'Patient', id: 'p1', name: [{ given: ['Ann', 'Lee'] }], active: true };
    expect(parseUntrustedJson(JSON.stringify(resource))).toEqual(resource);
  });

  it('refuses nesting deeper than the limit without overflowing the stack', () => {
    const deep = '['.repeat(10_000) + ']'.repeat(10_000);
    expect(codeOf(() => parseUntrustedJson(deep))).toBe('INVALID_INPUT');
    expect(codeOf(() => parseUntrustedJson('[[[1]]]', { maxDepth: 2, maxBytes: 100 }))).toBe('INVALID_INPUT');
    expect(parseUntrustedJson('[[1]]', { maxDepth: 2, maxBytes: 100 })).toEqual([[1]]);
  });

  it('does not count brackets inside strings as nesting', () => {
    const text = JSON.stringify({ note: '[[[[[[{{{{{{' });
    expect(parseUntrustedJson(text, { maxDepth: 1, maxBytes: 1000 })).toEqual({ note: '[[[[[[{{{{{{' });
    const escaped = JSON.stringify({ note: 'a "quoted [ bracket" \\' });
    expect(parseUntrustedJson(escaped, { maxDepth: 1, maxBytes: 1000 })).toEqual({ note: 'a "quoted [ bracket" \\' });
  });

  it('refuses a __proto__ key at any depth and leaves prototypes alone', () => {
    expect(codeOf(() => parseUntrustedJson('{"__proto__":{"polluted":true}}'))).toBe('INVALID_INPUT');
    expect(codeOf(() => parseUntrustedJson('{"a":[{"b":{"__proto__":{"x":1}}}]}'))).toBe('INVALID_INPUT');
    expect(codeOf(() => parseUntrustedJson('{"a":{"constructor":{"prototype":{"x":1}}}}'))).toBe('INVALID_INPUT');
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('refuses NUL characters in values and keys', () => {
    expect(codeOf(() => parseUntrustedJson('{"a":"x\\u0000y"}'))).toBe('INVALID_INPUT');
    expect(codeOf(() => parseUntrustedJson('{"a\\u0000":1}'))).toBe('INVALID_INPUT');
  });

  it('refuses text over the byte limit and malformed JSON with distinct codes', () => {
    expect(codeOf(() => parseUntrustedJson('"' + 'x'.repeat(200) + '"', { maxDepth: 5, maxBytes: 100 }))).toBe(
      'PAYLOAD_TOO_LARGE',
    );
    expect(codeOf(() => parseUntrustedJson('{"a":'))).toBe('INVALID_INPUT');
  });

  it('names where the problem is', () => {
    try {
      parseUntrustedJson('{"item":[{"text":"ok"},{"text":"bad\\u0000"}]}');
      expect.unreachable();
    } catch (error) {
      expect((error as DtrError).expression).toEqual(['$.item[1].text']);
    }
  });
});
