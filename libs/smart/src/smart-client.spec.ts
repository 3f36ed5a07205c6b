import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, importJWK } from 'jose';
import type * as oidc from 'openid-client';
import { describe, expect, it } from 'vitest';
import { clientSecretBasic, privateKeyJwt, type SigningCryptoKey } from './smart-client.js';

const AS = {
  issuer: 'https://ehr.example.org',
  token_endpoint: 'https://ehr.example.org/auth/token',
} as oidc.ServerMetadata;

describe('clientSecretBasic', () => {
  it('leaves unreserved characters such as "-" unencoded', async () => {
    const headers = new Headers();
    await clientSecretBasic('dtr-supplement.v2_x~y', 's3cr3t-value')(
      AS,
      { client_id: 'x' },
      new URLSearchParams(),
      headers,
    );
    const decoded = Buffer.from(headers.get('authorization')!.replace(/^Basic /, ''), 'base64').toString();
    expect(decoded).toBe('dtr-supplement.v2_x~y:s3cr3t-value');
  });

  it('percent-encodes what RFC 6749 requires (":" and non-ASCII)', async () => {
    const headers = new Headers();
    await clientSecretBasic('id:with colon', 'pä$$')(AS, { client_id: 'x' }, new URLSearchParams(), headers);
    const decoded = Buffer.from(headers.get('authorization')!.replace(/^Basic /, ''), 'base64').toString();
    expect(decoded).toBe('id%3Awith+colon:p%C3%A4%24%24');
  });
});

describe('privateKeyJwt', () => {
  for (const alg of ['RS384', 'ES384'] as const) {
    it(`signs a SMART client assertion with ${alg}: typ JWT, kid, aud = token endpoint, exp within 5 minutes, unique jti`, async () => {
      const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
      const auth = privateKeyJwt(privateKey as unknown as SigningCryptoKey, 'key-1', AS.token_endpoint!);
      const jtis = new Set<string>();
      for (let i = 0; i < 20; i++) {
        const body = new URLSearchParams();
        await auth(AS, { client_id: 'dtr-disclose', token_endpoint_auth_signing_alg: alg }, body, new Headers());
        expect(body.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
        const assertion = body.get('client_assertion')!;
        expect(decodeProtectedHeader(assertion)).toMatchObject({ alg, kid: 'key-1', typ: 'JWT' });
        const claims = decodeJwt(assertion);
        expect(claims).toMatchObject({ iss: 'dtr-disclose', sub: 'dtr-disclose', aud: AS.token_endpoint });
        const now = Math.floor(Date.now() / 1000);
        expect(claims.exp! - now).toBeLessThanOrEqual(300);
        expect(claims.exp! - now).toBeGreaterThan(0);
        jtis.add(String(claims.jti));
        const verifyKey = await importJWK(await exportJWK(publicKey), alg);
        await expect(jwtVerify(assertion, verifyKey, { audience: AS.token_endpoint! })).resolves.toBeTruthy();
      }
      expect(jtis.size).toBe(20);
    });
  }
});
