import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardedLookup, outboundFetch, refusedAddress } from './outbound-fetch.js';
import type { OutboundPolicy } from './outbound-policy.js';

const PRODUCTION: OutboundPolicy = { allowInsecureLoopback: false };
const DEVELOPMENT: OutboundPolicy = { allowInsecureLoopback: true };

/** A resolver stub: every name resolves to these addresses. */
const resolvingTo =
  (...addresses: string[]) =>
  (_host: string, callback: (error: Error | null, found: Array<{ address: string; family: number }>) => void) =>
    callback(
      null,
      addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })),
    );

function lookupWith(policy: OutboundPolicy, ...addresses: string[]) {
  return new Promise<{ error: Error | null; address: unknown }>((resolve) =>
    guardedLookup(policy, resolvingTo(...addresses))('ehr.example.org', { all: true }, (error, address) =>
      resolve({ error, address }),
    ),
  );
}

describe('outbound connections are checked against the policy when they are made', () => {
  it.each([
    '10.0.0.1',
    '172.16.5.4',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '127.0.0.1',
    '::1',
    'fe80::1',
    'fd12:3456::1',
    '::ffff:10.0.0.1',
    '::ffff:a00:1',
    '::ffff:127.0.0.1',
    '224.0.0.1',
  ])('a name resolving to %s is refused in production', async (address) => {
    const { error } = await lookupWith(PRODUCTION, address);
    expect(error).toMatchObject({ code: 'FORBIDDEN', message: expect.stringContaining('ehr.example.org') });
  });

  it('a name resolving to a public address and a private one (rebinding) is refused', async () => {
    const { error } = await lookupWith(PRODUCTION, '93.184.215.14', '10.0.0.1');
    expect(error).toMatchObject({ code: 'FORBIDDEN' });
  });

  it('public addresses pass; loopback passes when the policy allows it; allowed networks pass', async () => {
    expect(await lookupWith(PRODUCTION, '93.184.215.14')).toEqual({
      error: null,
      address: [{ address: '93.184.215.14', family: 4 }],
    });
    expect((await lookupWith(DEVELOPMENT, '127.0.0.1')).error).toBeNull();
    expect((await lookupWith(DEVELOPMENT, '10.0.0.1')).error).toMatchObject({ code: 'FORBIDDEN' });
    const hospital = { allowInsecureLoopback: false, allowedNetworks: ['10.20.0.0/16'] };
    expect((await lookupWith(hospital, '10.20.3.4')).error).toBeNull();
    expect((await lookupWith(hospital, '10.21.3.4')).error).toMatchObject({ code: 'FORBIDDEN' });
    expect(refusedAddress('2606:4700::1111', PRODUCTION)).toBeUndefined();
  });
});

describe('outboundFetch over real HTTP', () => {
  let server: Server;
  let port: number;
  let hits = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      hits++;
      res.setHeader('content-type', 'application/json');
      res.end('{"ok":true}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => server.close());

  it('refuses a hostname resolving to 127.0.0.1 when loopback is not allowed: nothing reaches the server', async () => {
    const before = hits;
    await expect(outboundFetch(PRODUCTION)(`http://localhost:${port}/`)).rejects.toMatchObject({
      code: 'FORBIDDEN',
      message: expect.stringContaining('loopback'),
    });
    await expect(outboundFetch(PRODUCTION)(`http://127.0.0.1:${port}/`)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(hits).toBe(before);
  });

  it('reaches the same server when the policy allows loopback', async () => {
    const response = await outboundFetch(DEVELOPMENT)(`http://localhost:${port}/`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ ok: true });
  });
});
