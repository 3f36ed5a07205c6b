import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { describe, expect, it } from 'vitest';
import { parseCertificateMaterial, udapIdentity } from './material.js';
import { TestCertificateAuthority } from './test-ca.js';

const SAN = 'https://dtr.example/udap/supplement';

describe('parseCertificateMaterial', () => {
  const ca = TestCertificateAuthority.create('Material Test Anchor');
  const issued = ca.issue({ sanUris: [SAN, 'https://dtr.example/udap/disclose'] });

  it('reads PEM material: leaf first in x5c, then the chain, the key as PKCS#8, the SAN URIs and validity', () => {
    const chainPem = new X509Certificate(Buffer.from(issued.x5c[1]!, 'base64')).toString();
    const material = parseCertificateMaterial({
      certificatePem: issued.certificatePem,
      privateKeyPem: issued.privateKeyPem,
      chainPem,
    });
    expect(material.x5c).toEqual(issued.x5c);
    expect(material.sanUris).toEqual([SAN, 'https://dtr.example/udap/disclose']);
    expect(material.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(material.keyType).toBe('rsa');
    expect(material.subject).toContain('CN=');
    expect(material.issuer).toBe('CN=Material Test Anchor');
    expect(material.notBefore.getTime()).toBeLessThan(Date.now());
    expect(material.notAfter.getTime()).toBeGreaterThan(Date.now());
  });

  it('reads a PKCS#1 key and a certificate without chain', () => {
    const pkcs1 = forge.pki.privateKeyToPem(forge.pki.privateKeyFromPem(issued.privateKeyPem));
    const material = parseCertificateMaterial({ certificatePem: issued.certificatePem, privateKeyPem: pkcs1 });
    expect(material.x5c).toEqual([issued.x5c[0]]);
    expect(material.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });

  it('reads PKCS#12: the leaf is the certificate that matches the key, whatever its place in the file', () => {
    const material = parseCertificateMaterial({ pkcs12: issued.pkcs12('s3cret'), passphrase: 's3cret' });
    expect(material.x5c[0]).toBe(issued.x5c[0]);
    expect(material.x5c).toHaveLength(2);
    expect(material.sanUris).toContain(SAN);
    expect(material.keyType).toBe('rsa');
  });

  it('refuses a wrong passphrase, a file that is not PKCS#12 and a file without key', () => {
    expect(() => parseCertificateMaterial({ pkcs12: issued.pkcs12('s3cret'), passphrase: 'wrong' })).toThrow(
      /passphrase is wrong/,
    );
    expect(() => parseCertificateMaterial({ pkcs12: Buffer.from('not a p12 file'), passphrase: 'x' })).toThrow(
      /not a readable PKCS#12/,
    );
    const certOnly = Buffer.from(
      forge.asn1
        .toDer(
          forge.pkcs12.toPkcs12Asn1(null, [forge.pki.certificateFromPem(issued.certificatePem)], 'pw', {
            algorithm: '3des',
          }),
        )
        .getBytes(),
      'binary',
    );
    expect(() => parseCertificateMaterial({ pkcs12: certOnly, passphrase: 'pw' })).toThrow(/holds no private key/);
  });

  it('refuses a key that does not match the certificate', () => {
    const other = ca.issue({ sanUris: [SAN] });
    const attempt = () =>
      parseCertificateMaterial({ certificatePem: issued.certificatePem, privateKeyPem: other.privateKeyPem });
    expect(attempt).toThrow(/private key does not match the certificate/);
    try {
      attempt();
    } catch (error) {
      expect(error).toMatchObject({ code: 'INVALID_INPUT' });
    }
  });

  it('refuses a PEM without key, an encrypted key and a PEM without certificate', () => {
    expect(() => parseCertificateMaterial({ certificatePem: issued.certificatePem, privateKeyPem: '' })).toThrow(
      /no private key was found/,
    );
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const encrypted = privateKey
      .export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' })
      .toString();
    expect(() => parseCertificateMaterial({ certificatePem: issued.certificatePem, privateKeyPem: encrypted })).toThrow(
      /encrypted/,
    );
    expect(() => parseCertificateMaterial({ certificatePem: 'nothing', privateKeyPem: issued.privateKeyPem })).toThrow(
      /no certificate was found/,
    );
  });

  it('refuses a certificate without SAN URI and an RSA key under 2048 bits', () => {
    const noSan = selfSigned(2048, false);
    expect(() => parseCertificateMaterial(noSan)).toThrow(/has no SAN URI/);
    const small = selfSigned(1024, true);
    expect(() => parseCertificateMaterial(small)).toThrow(/1024 bits; UDAP needs 2048 or more/);
  });

  it('refuses a key that is neither RSA nor EC P-256/P-384', () => {
    const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(() => parseCertificateMaterial({ certificatePem: issued.certificatePem, privateKeyPem: ed })).toThrow(
      /ed25519 key is not supported/,
    );
    const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    expect(() => parseCertificateMaterial({ certificatePem: issued.certificatePem, privateKeyPem: k1 })).toThrow(
      /curve secp256k1/,
    );
  });
});

describe('udapIdentity', () => {
  const ca = TestCertificateAuthority.create('Identity Test Anchor');
  const material = parseCertificateMaterial(
    (({ certificatePem, privateKeyPem }) => ({ certificatePem, privateKeyPem }))(ca.issue({ sanUris: [SAN] })),
  );

  it('signs as one of the SAN URIs, RS256 by default for an RSA key', () => {
    const identity = udapIdentity(material, SAN);
    expect(identity).toMatchObject({ sanUri: SAN, alg: 'RS256', x5c: material.x5c });
    expect(identity.privateKey.asymmetricKeyType).toBe('rsa');
    expect(udapIdentity(material, SAN, 'RS384').alg).toBe('RS384');
  });

  it('refuses a SAN URI the certificate does not have, and an algorithm that does not fit the key', () => {
    expect(() => udapIdentity(material, 'https://someone-else.example')).toThrow(/is not a SAN URI of the certificate/);
    expect(() => udapIdentity(material, SAN, 'ES256')).toThrow(/ES256 does not fit an RSA key/);
  });

  it('defaults to ES256 for a P-256 key and refuses ES384 with it', () => {
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    const ec = { x5c: material.x5c, privateKeyPem: p256, sanUris: [SAN], keyType: 'ec' as const };
    expect(udapIdentity(ec, SAN).alg).toBe('ES256');
    expect(() => udapIdentity(ec, SAN, 'ES384')).toThrow(/ES384 does not fit an EC key on prime256v1: use ES256/);
    expect(() => udapIdentity(ec, SAN, 'RS256')).toThrow(/RS256 does not fit an EC key/);
  });
});

/** A self-signed RSA certificate, with or without a SAN URI, for refusals the test CA cannot produce. */
function selfSigned(bits: number, withSan: boolean): { certificatePem: string; privateKeyPem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const key = forge.pki.privateKeyFromPem(pem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = '01';
  cert.validity.notBefore = new Date(Date.now() - 3600_000);
  cert.validity.notAfter = new Date(Date.now() + 86400_000);
  cert.setSubject([{ name: 'commonName', value: 'self' }]);
  cert.setIssuer([{ name: 'commonName', value: 'self' }]);
  if (withSan) cert.setExtensions([{ name: 'subjectAltName', altNames: [{ type: 6, value: SAN }] }]);
  cert.sign(key, forge.md.sha256.create());
  return { certificatePem: forge.pki.certificateToPem(cert), privateKeyPem: pem };
}
