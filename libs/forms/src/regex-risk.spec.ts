import { describe, expect, it } from 'vitest';
import { regexBacktrackRisk } from './regex-risk.js';

describe('regexBacktrackRisk', () => {
  it.each([
    ['^(a+)+$', 'nested quantifiers'],
    ['(\\w*\\s?)*$', 'nested quantifiers'],
    ['^(x{1,9}){2,}$', 'nested quantifiers'],
    ['(?:[a-z]+\\.)+com$', 'nested quantifiers'],
    ['^(a|ab)*c$', 'alternatives that can overlap'],
    ['^(\\d|[0-9])+$', 'alternatives that can overlap'],
    ['^(a|a)*$', 'alternatives that can overlap'],
    ['^(a?)*$', 'can match nothing'],
    ['^(?=(a+)+b)', 'nested quantifiers'],
    ['(a)\\1', 'backreference'],
    ['(?<x>a)\\k<x>', 'backreference'],
    ['(', 'could not be read'],
    ['a**', 'could not be read'],
    ['(?x)', 'could not be read'],
    ['x'.repeat(1001), 'longer than 1000 characters'],
    ['('.repeat(30) + ')'.repeat(30), 'nested too deeply'],
  ])('flags %s (%s)', (pattern, reason) => {
    expect(regexBacktrackRisk(pattern)).toContain(reason);
  });

  it.each([
    '^[A-Z]{2}\\d{6}$',
    '^\\d{3}-\\d{2}-\\d{4}$',
    '^(\\d{3}-)?\\d{4}$',
    '^(a|b|-)*$',
    '^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$',
    '\\d+\\d+$',
    '^(?:Mr|Ms)\\. [A-Z][a-z]+$',
    '^\\p{L}+$',
    '^\\u00e9{1,3}\\x41?$',
    'a{,3}',
    '[\\]a]+',
    '^$',
  ])('judges %s harmless', (pattern) => {
    expect(regexBacktrackRisk(pattern)).toBeUndefined();
  });
});
