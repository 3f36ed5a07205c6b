import { describe, expect, it } from 'vitest';
import { completionProblems, mergeResume, reviseResponse } from './form-rules.js';
import { DR_LEE, formFor, META, pageCopy } from './test-forms.js';

/** A small deterministic generator (mulberry32), so a failure names a seed that reproduces it. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ODD_VALUES: unknown[] = [
  null,
  undefined,
  0,
  -1,
  1.5,
  Number.MAX_SAFE_INTEGER,
  '',
  ' ',
  'x'.repeat(300),
  '2024-13-45',
  'javascript:alert(1)',
  true,
  [],
  {},
  [[[]]],
  { value: 'x' },
  { reference: 42 },
  { code: null },
  { contentType: 1, data: {} },
];
const ODD_KEYS = [
  'valueString',
  'valueInteger',
  'valueCoding',
  'valueQuantity',
  'valueFoo',
  'item',
  'answer',
  'linkId',
];

/** The page's copy with one random part replaced by an odd value. */
function mutate(next: () => number): unknown {
  const page = pageCopy() as unknown as Record<string, unknown>;
  const pick = <T>(list: T[]): T => list[Math.floor(next() * list.length)]!;
  const containers: Array<Record<string, unknown>> = [];
  const walk = (value: unknown) => {
    if (value && typeof value === 'object') {
      if (!Array.isArray(value)) containers.push(value as Record<string, unknown>);
      for (const v of Object.values(value)) walk(v);
    }
  };
  walk(page);
  for (let i = 0; i < 1 + Math.floor(next() * 3); i++) {
    const target = pick(containers);
    const keys = Object.keys(target);
    const key = next() < 0.5 && keys.length > 0 ? pick(keys) : pick(ODD_KEYS);
    target[key] = pick(ODD_VALUES);
  }
  return page;
}

describe('odd saves from a page never throw', () => {
  it('500 random corruptions of a valid save each give a response or problems', () => {
    let refusedCount = 0;
    for (let seed = 1; seed <= 500; seed++) {
      const submitted = mutate(random(seed));
      try {
        const result = reviseResponse(formFor(), submitted, undefined, DR_LEE, META);
        if (result.ok) {
          completionProblems(formFor(), result.response);
          mergeResume(formFor(), result.response);
        } else {
          refusedCount++;
          expect(result.problems.length, `seed ${seed}`).toBeGreaterThan(0);
        }
      } catch (error) {
        throw new Error(`seed ${seed} threw: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    // Most corruptions are refused; some (an odd `text`, a removed answer) are harmless and saved.
    expect(refusedCount).toBeGreaterThan(250);
  });
});
