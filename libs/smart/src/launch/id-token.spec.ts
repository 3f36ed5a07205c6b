import { FixedClock } from '@dtr/kernel';
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';

type CryptoKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
import type { SmartConfiguration } from '../smart-configuration.js';
import { IdTokenVerifier } from './id-token.js';

const ISSUER = 'https://ehr.example.org/auth';
const NOW = new Date('2026-12-05T12:00:00Z');
const smart = (extra: Partial<SmartConfiguration> = {}): SmartConfiguration => ({
  authorization_endpoint: `${ISSUER}/authorize`,
  token_endpoint: `${ISSUER}/token`,
  capabilities: [],
  ...extra,
});

/** IdTokenVerifier alone, the EHR's discovery document and JWKS served by a fake fetch. */
describe('IdTokenVerifier', () => {
  let key: CryptoKey;
  let other: CryptoKey;
  let fetched: string[];
  let discovery: Record<string, unknown>;
  let verifier: IdTokenVerifier;

  beforeAll(async () => {
    const pair = await generateKeyPair('RS256', { extractable: true });
    key = pair.privateKey;
    other = (await generateKeyPair('RS256')).privateKey;
    const jwks = { keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] };
    discovery = { issuer: ISSUER, jwks_uri: `${ISSUER}/jwks` };
    fetched = [];
    const fakeFetch = (async (url: URL | string) => {
      const href = String(url);
      fetched.push(href);
      const body = href.endsWith('/jwks') ? jwks : href.endsWith('/openid-configuration') ? discovery : undefined;
      return new Response(JSON.stringify(body ?? {}), { status: body ? 200 : 404 });
    }) as typeof fetch;
    verifier = new IdTokenVerifier({ allowInsecureLoopback: false }, new FixedClock(NOW), fakeFetch);
  });

  const sign = (claims: JWTPayload, signer: CryptoKey = key) => {
    const iat = Math.floor(NOW.getTime() / 1000) - 5;
    return new SignJWT({ iss: ISSUER, sub: 'pr1', aud: 'dtr', iat, exp: iat + 300, nonce: 'n1', ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .sign(signer);
  };
  const expect_ = { clientId: 'dtr', nonce: 'n1' };

  it('verifies with the keys of the issuer’s openid-configuration when smart-configuration names none', async () => {
    const claims = await verifier.verify(await sign({ fhirUser: 'Practitioner/pr1' }), { ...expect_, smart: smart() });
    expect(claims['fhirUser']).toBe('Practitioner/pr1');
    expect(fetched).toEqual([`${ISSUER}/.well-known/openid-configuration`, `${ISSUER}/jwks`]);
  });

  it('refuses a bad signature, another audience, another nonce, an expired or future token', async () => {
    const s = smart({ issuer: ISSUER, jwks_uri: `${ISSUER}/jwks` });
    const refused = async (token: string, pattern: RegExp) =>
      expect(verifier.verify(token, { ...expect_, smart: s })).rejects.toMatchObject({
        code: 'FORBIDDEN',
        message: expect.stringMatching(pattern),
      });
    await refused(await sign({}, other), /signature/);
    await refused(await sign({ aud: 'someone-else' }), /claim aud/);
    await refused(await sign({ nonce: 'n2' }), /nonce/);
    const old = Math.floor(NOW.getTime() / 1000) - 4000;
    await refused(await sign({ iat: old, exp: old + 300 }), /expired|iat/);
    const future = Math.floor(NOW.getTime() / 1000) + 600;
    await refused(await sign({ iat: future, exp: future + 300 }), /future|iat/);
    await refused(await sign({ iss: 'https://ehr.example.org/other' }), /claim iss/);
  });

  it('without a configured issuer, refuses an iss off the token endpoint origin or one its discovery does not name', async () => {
    await expect(
      verifier.verify(await sign({ iss: 'https://evil.example.org/auth' }), { ...expect_, smart: smart() }),
    ).rejects.toMatchObject({ message: expect.stringMatching(/not the EHR's authorization server/) });
    discovery['issuer'] = 'https://ehr.example.org/elsewhere';
    try {
      await expect(verifier.verify(await sign({}), { ...expect_, smart: smart() })).rejects.toMatchObject({
        message: expect.stringMatching(/names another issuer/),
      });
    } finally {
      discovery['issuer'] = ISSUER;
    }
  });
});
