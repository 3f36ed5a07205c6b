import { describe, expect, it } from 'vitest';
import { leakedSecrets } from './support/secrets.js';

describe('secret scans used by the leak tests', () => {
  const secret = 'ehr-access-7f3a9c2b1d';
  it('finds a secret glued to other text, and in its percent, base64 and base64url forms', () => {
    expect(leakedSecrets(`prefix${secret}suffix`, [secret])).toHaveLength(1);
    expect(leakedSecrets(`x=${encodeURIComponent('a b' + secret)}`, [secret])).toHaveLength(1);
    expect(leakedSecrets(Buffer.from(secret).toString('base64'), [secret])).toHaveLength(1);
    expect(leakedSecrets(`Bearer ${Buffer.from(secret).toString('base64url')}`, [secret])).toHaveLength(1);
  });
  it('finds nothing where the secret is absent, and never returns the secret itself', () => {
    expect(leakedSecrets('nothing to see', [secret])).toEqual([]);
    expect(leakedSecrets(secret, [secret]).join(' ')).not.toContain(secret);
  });
});
