import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KeyRingSecretBox } from './key-ring-secret-box.js';

const key = () => randomBytes(32);

describe('KeyRingSecretBox', () => {
  it('round-trips and never shows the plaintext', () => {
    const box = new KeyRingSecretBox(new Map([['k1', key()]]));
    const sealed = box.seal('refresh-token-value', 'row:1');
    expect(sealed).toMatch(/^v1\.k1\./);
    expect(sealed).not.toContain('refresh-token-value');
    expect(box.open(sealed, 'row:1')).toBe('refresh-token-value');
    expect(box.seal('x', 'a')).not.toBe(box.seal('x', 'a'));
  });

  it('refuses a tag cut to 4 or 12 bytes, a flipped bit, and another row (AAD)', () => {
    const box = new KeyRingSecretBox(new Map([['k1', key()]]));
    const sealed = box.seal('secret', 'row:1');
    const [v, kid, iv, tag, data] = sealed.split('.') as [string, string, string, string, string];
    const tagBytes = Buffer.from(tag, 'base64url');
    for (const cut of [4, 12]) {
      expect(() =>
        box.open([v, kid, iv, tagBytes.subarray(0, cut).toString('base64url'), data].join('.'), 'row:1'),
      ).toThrow(/tag length/);
    }
    const flipped = Buffer.from(data, 'base64url');
    flipped[0] = flipped[0]! ^ 1;
    expect(() => box.open([v, kid, iv, tag, flipped.toString('base64url')].join('.'), 'row:1')).toThrow(
      /failed authentication/,
    );
    expect(() => box.open(sealed, 'row:2')).toThrow(/failed authentication/);
  });

  it('rotates: the first key encrypts, older keys still decrypt, unknown keys are named', () => {
    const oldKey = key();
    const before = new KeyRingSecretBox(new Map([['2026a', oldKey]]));
    const old = before.seal('kept', 'aad');
    const after = new KeyRingSecretBox(
      new Map([
        ['2026b', key()],
        ['2026a', oldKey],
      ]),
    );
    expect(after.open(old, 'aad')).toBe('kept');
    expect(after.seal('new', 'aad')).toMatch(/^v1\.2026b\./);
    const stranger = new KeyRingSecretBox(new Map([['other', key()]]));
    expect(() => stranger.open(old, 'aad')).toThrow(/key 2026a, which is not in DTR_ENCRYPTION_KEYS/);
  });
});
