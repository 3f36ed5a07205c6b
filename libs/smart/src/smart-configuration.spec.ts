import { FixedClock } from '@dtr/kernel';
import { describe, expect, it } from 'vitest';
import { SmartDiscovery, parseSmartConfiguration, supportsOpenId } from './smart-configuration.js';

const BASE = 'https://ehr.example.org/fhir';
const DOC = {
  issuer: 'https://ehr.example.org/auth',
  jwks_uri: 'https://ehr.example.org/auth/jwks',
  authorization_endpoint: 'https://ehr.example.org/auth/authorize',
  token_endpoint: 'https://ehr.example.org/auth/token',
  capabilities: ['launch-ehr', 'sso-openid-connect', 'client-confidential-asymmetric'],
  code_challenge_methods_supported: ['S256'],
  authorization_response_iss_parameter_supported: true,
};

function fakeFetch(answer: () => Response | Promise<Response>) {
  const calls: string[] = [];
  const fn = (async (input: string | URL | Request) => {
    calls.push(String(input));
    return answer();
  }) as typeof fetch;
  return { fn, calls };
}

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

describe('parseSmartConfiguration', () => {
  const strict = { allowInsecureLoopback: false };

  it('keeps what we rely on and recognises OpenID support', () => {
    const config = parseSmartConfiguration(DOC, strict);
    expect(config.token_endpoint).toBe(DOC.token_endpoint);
    expect(config.authorization_response_iss_parameter_supported).toBe(true);
    expect(supportsOpenId(config)).toBe(true);
    const { issuer: _issuer, ...withoutIssuer } = DOC;
    expect(supportsOpenId(parseSmartConfiguration(withoutIssuer, strict))).toBe(false);
  });

  it('refuses documents without the endpoints, with http endpoints, or without PKCE S256', () => {
    const { token_endpoint: _t, ...noToken } = DOC;
    expect(() => parseSmartConfiguration(noToken, strict)).toThrow(/lacks token_endpoint/);
    expect(() => parseSmartConfiguration({ ...DOC, token_endpoint: 'http://ehr.example.org/token' }, strict)).toThrow(
      /must use https/,
    );
    expect(() => parseSmartConfiguration({ ...DOC, code_challenge_methods_supported: ['plain'] }, strict)).toThrow(
      /S256/,
    );
    expect(() => parseSmartConfiguration([], strict)).toThrow(/not a JSON object/);
  });

  it('allows http only to loopback, and only when the policy says so', () => {
    const local = { ...DOC, token_endpoint: 'http://127.0.0.1:3001/auth/token' };
    expect(parseSmartConfiguration(local, { allowInsecureLoopback: true }).token_endpoint).toBe(local.token_endpoint);
    expect(() => parseSmartConfiguration(local, strict)).toThrow(/must use https/);
    expect(() =>
      parseSmartConfiguration({ ...DOC, token_endpoint: 'http://10.0.0.5/token' }, { allowInsecureLoopback: true }),
    ).toThrow(/must use https/);
  });
});

describe('SmartDiscovery', () => {
  it('fetches once per issuer while fresh, single-flight under concurrency', async () => {
    const { fn, calls } = fakeFetch(() => json(DOC));
    const discovery = new SmartDiscovery({ allowInsecureLoopback: false }, new FixedClock(new Date()), fn);
    const results = await Promise.all(Array.from({ length: 10 }, () => discovery.get(`${BASE}/`)));
    expect(results.every((r) => r.token_endpoint === DOC.token_endpoint)).toBe(true);
    expect(calls).toEqual([`${BASE}/.well-known/smart-configuration`]);
  });

  it('refetches after the TTL and after invalidate', async () => {
    const { fn, calls } = fakeFetch(() => json(DOC));
    const clock = new FixedClock(new Date());
    const discovery = new SmartDiscovery({ allowInsecureLoopback: false }, clock, fn, 1000);
    await discovery.get(BASE);
    clock.advance(999);
    await discovery.get(BASE);
    expect(calls).toHaveLength(1);
    clock.advance(2);
    await discovery.get(BASE);
    expect(calls).toHaveLength(2);
    discovery.invalidate(BASE);
    await discovery.get(BASE);
    expect(calls).toHaveLength(3);
  });

  it('turns failures into UPSTREAM errors and does not cache them', async () => {
    let fail = true;
    const { fn } = fakeFetch(() => (fail ? json({ error: 'x' }, 503) : json(DOC)));
    const discovery = new SmartDiscovery({ allowInsecureLoopback: false }, new FixedClock(new Date()), fn);
    await expect(discovery.get(BASE)).rejects.toMatchObject({ code: 'UPSTREAM_ERROR' });
    fail = false;
    await expect(discovery.get(BASE)).resolves.toMatchObject({ token_endpoint: DOC.token_endpoint });
  });

  it('reports a timeout as UPSTREAM_TIMEOUT', async () => {
    const hanging = ((_input: unknown, init?: RequestInit) =>
      new Promise<Response>((_resolve, reject) => {
        init?.signal?.addEventListener('abort', () => reject(init.signal!.reason));
      })) as typeof fetch;
    const discovery = new SmartDiscovery(
      { allowInsecureLoopback: false },
      new FixedClock(new Date()),
      hanging,
      1000,
      50,
    );
    await expect(discovery.get(BASE)).rejects.toMatchObject({ code: 'UPSTREAM_TIMEOUT' });
  });

  it('never calls an http FHIR base outside loopback', async () => {
    const { fn, calls } = fakeFetch(() => json(DOC));
    const discovery = new SmartDiscovery({ allowInsecureLoopback: true }, new FixedClock(new Date()), fn);
    await expect(discovery.get('http://ehr.example.org/fhir')).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(calls).toEqual([]);
  });
});
