import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sanUrisOf, verifyChain } from './certificates.js';
import { TestCertificateAuthority } from './test-ca.js';

describe('verifyChain with certificates of a test CA', () => {
  const ca = TestCertificateAuthority.create('Test Community Anchor');
  const other = TestCertificateAuthority.create('Another Community');
  const now = new Date();

  it('accepts a leaf issued by a trusted anchor and gives its SAN URIs', () => {
    const issued = ca.issue({ sanUris: ['https://dtr.example/fhir/supplement', 'https://dtr.example/fhir/disclose'] });
    const { sanUris, leaf } = verifyChain(issued.x5c, [ca.anchorPem], now);
    expect(sanUris).toEqual(['https://dtr.example/fhir/supplement', 'https://dtr.example/fhir/disclose']);
    expect(leaf.raw.equals(new X509Certificate(issued.certificatePem).raw)).toBe(true);
    expect(sanUrisOf(new X509Certificate(issued.certificatePem))).toEqual(sanUris);
  });

  it('refuses a chain to an anchor it does not trust, an expired and a not yet valid certificate', () => {
    const issued = other.issue({ sanUris: ['https://x.example'] });
    expect(() => verifyChain(issued.x5c, [ca.anchorPem], now)).toThrow(/udap: untrusted-anchor/);
    const expired = ca.issue({
      sanUris: ['https://x.example'],
      notBefore: new Date(Date.now() - 3 * 86400_000),
      notAfter: new Date(Date.now() - 86400_000),
    });
    expect(() => verifyChain(expired.x5c, [ca.anchorPem], now)).toThrow(/udap: expired-certificate/);
    const future = ca.issue({ sanUris: ['https://x.example'], notBefore: new Date(Date.now() + 86400_000) });
    expect(() => verifyChain(future.x5c, [ca.anchorPem], now)).toThrow(/udap: not-yet-valid-certificate/);
    expect(() => verifyChain(['bm90IGEgY2VydA=='], [ca.anchorPem], now)).toThrow(/udap: bad-claims/);
    expect(() => verifyChain('x', [ca.anchorPem], now)).toThrow(/udap: bad-claims/);
  });
});
