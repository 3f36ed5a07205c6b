import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { BlockList, isIP } from 'node:net';
import { Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { DtrError } from '@dtr/kernel';
import type { OutboundPolicy } from './outbound-policy.js';

/**
 * Addresses no outbound call may reach unless the policy allows them: private networks (RFC 1918), CGNAT, link-local
 * (cloud metadata at 169.254.169.254), unique-local IPv6, multicast, documentation and reserved ranges, and the
 * unspecified address. Loopback is separate (allowed in development and tests).
 */
const REFUSED: Array<[string, number, 'ipv4' | 'ipv6']> = [
  ['0.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.0.2.0', 24, 'ipv4'],
  ['192.88.99.0', 24, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['198.51.100.0', 24, 'ipv4'],
  ['203.0.113.0', 24, 'ipv4'],
  ['224.0.0.0', 4, 'ipv4'],
  ['240.0.0.0', 4, 'ipv4'],
  ['::', 128, 'ipv6'],
  ['64:ff9b:1::', 48, 'ipv6'],
  ['100::', 64, 'ipv6'],
  ['2001:db8::', 32, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['fec0::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
];
const LOOPBACK: Array<[string, number, 'ipv4' | 'ipv6']> = [
  ['127.0.0.0', 8, 'ipv4'],
  ['::1', 128, 'ipv6'],
];

function blockList(ranges: Array<[string, number, 'ipv4' | 'ipv6']>): BlockList {
  const list = new BlockList();
  for (const [network, prefix, family] of ranges) list.addSubnet(network, prefix, family);
  return list;
}
const refusedList = blockList(REFUSED);
const loopbackList = blockList(LOOPBACK);

/** An IPv4 address carried in IPv6 (`::ffff:10.0.0.1`, NAT64 `64:ff9b::a00:1`), as IPv4; else the address. */
function unwrap(address: string): { address: string; family: 'ipv4' | 'ipv6' } {
  const lower = address.toLowerCase().replace(/^\[|\]$/g, '');
  if (isIP(lower) === 4) return { address: lower, family: 'ipv4' };
  const dotted = /^(?:::ffff:(?:0:)?|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted) return { address: dotted[1]!, family: 'ipv4' };
  const hex = /^(?:::ffff:(?:0:)?|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex) {
    const high = parseInt(hex[1]!, 16);
    const low = parseInt(hex[2]!, 16);
    return { address: [high >> 8, high & 255, low >> 8, low & 255].join('.'), family: 'ipv4' };
  }
  return { address: lower, family: 'ipv6' };
}

/** Parses `10.20.0.0/16`-style networks (IPv4 or IPv6) into a list; throws on a malformed one. */
export function networkList(cidrs: string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [network, prefix] = cidr.trim().split('/');
    const family = isIP(network ?? '');
    const bits = Number(prefix);
    if (!family || !Number.isInteger(bits) || bits < 0 || bits > (family === 4 ? 32 : 128))
      throw new DtrError('CONFIGURATION', `${cidr} is not a network in CIDR notation (e.g. 10.20.0.0/16)`);
    list.addSubnet(network!, bits, family === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

/**
 * Why an address may not be connected to under the policy, or undefined when it may: loopback only when the policy
 * allows it, the refused ranges only when inside one of the policy's allowed networks.
 */
export function refusedAddress(address: string, policy: OutboundPolicy): string | undefined {
  const { address: ip, family } = unwrap(address);
  if (!isIP(ip)) return 'not an IP address';
  if (loopbackList.check(ip, family)) return policy.allowInsecureLoopback ? undefined : 'a loopback address';
  if (!refusedList.check(ip, family)) return undefined;
  if (policy.allowedNetworks && policy.allowedNetworks.length > 0 && allowed(policy).check(ip, family))
    return undefined;
  return 'a private, link-local or reserved address';
}

const allowedLists = new WeakMap<OutboundPolicy, BlockList>();
function allowed(policy: OutboundPolicy): BlockList {
  let list = allowedLists.get(policy);
  if (!list) allowedLists.set(policy, (list = networkList(policy.allowedNetworks ?? [])));
  return list;
}

function refusal(host: string, why: string): DtrError {
  return new DtrError('FORBIDDEN', `outbound connection to ${host} refused: it resolves to ${why}`, {
    details: { host },
  });
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
type Resolver = (hostname: string, callback: (error: Error | null, addresses: LookupAddress[]) => void) => void;

const systemResolver: Resolver = (hostname, callback) =>
  dnsLookup(hostname, { all: true, verbatim: true }, (error, addresses) => callback(error, addresses ?? []));

/**
 * A `lookup` for node:net that resolves the name and refuses the connection when any address it resolves to is
 * refused by the policy: checked at connect time, on the addresses actually connected to, so a name that resolves
 * to a public address when checked and to a private one when used (DNS rebinding) does not get through.
 */
export function guardedLookup(policy: OutboundPolicy, resolve: Resolver = systemResolver) {
  return (hostname: string, options: { all?: boolean; family?: number | string }, callback: LookupCallback): void => {
    resolve(hostname, (error, addresses) => {
      if (error) return callback(error as NodeJS.ErrnoException, options.all ? [] : '', 0);
      const wanted = addresses.filter((a) => !options.family || options.family === a.family || options.family === 0);
      for (const a of wanted) {
        const why = refusedAddress(a.address, policy);
        if (why) return callback(refusal(hostname, why) as unknown as NodeJS.ErrnoException, options.all ? [] : '', 0);
      }
      if (wanted.length === 0) {
        const none = Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' });
        return callback(none, options.all ? [] : '', 0);
      }
      if (options.all) callback(null, wanted);
      else callback(null, wanted[0]!.address, wanted[0]!.family);
    });
  };
}

/** TLS settings for the connections of one `fetch` (a payer's mutual TLS). */
export interface OutboundTls {
  certificate?: string;
  privateKey?: string;
  serverCa?: string;
}

const fetches = new WeakMap<OutboundPolicy, typeof fetch>();

/**
 * The `fetch` every outbound call goes through (EHR, payer, discovery, tokens, JWKS): HTTP over node:http/https
 * with keep-alive, whose connections are checked against the policy when they are made (see guardedLookup; an IP
 * literal is checked before connecting). Redirects are never followed.
 */
export function outboundFetch(policy: OutboundPolicy, tls?: OutboundTls, resolve?: Resolver): typeof fetch {
  if (!tls && !resolve) {
    const known = fetches.get(policy);
    if (known) return known;
  }
  const lookup = guardedLookup(policy, resolve);
  const httpAgent = new HttpAgent({ keepAlive: true, lookup } as ConstructorParameters<typeof HttpAgent>[0]);
  const httpsAgent = new HttpsAgent({
    keepAlive: true,
    lookup,
    ...(tls?.certificate ? { cert: tls.certificate } : {}),
    ...(tls?.privateKey ? { key: tls.privateKey } : {}),
    ...(tls?.serverCa ? { ca: tls.serverCa } : {}),
  } as ConstructorParameters<typeof HttpsAgent>[0]);
  const fn = (async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input.toString() : input.url);
    if (url.protocol !== 'https:' && url.protocol !== 'http:')
      throw new TypeError(`fetch failed: ${url.protocol} is not supported`);
    if (tls && url.protocol !== 'https:')
      throw new DtrError('CONFIGURATION', `mutual TLS needs https, not ${url.protocol} (${url.origin})`);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host)) {
      const why = refusedAddress(host, policy);
      if (why) throw refusal(host, why);
    }
    return send(url, init, url.protocol === 'https:' ? httpsAgent : httpAgent, lookup);
  }) as typeof fetch;
  if (!tls && !resolve) fetches.set(policy, fn);
  return fn;
}

async function bodyOf(init: RequestInit): Promise<string | Buffer | undefined> {
  const body = init.body;
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') return body;
  if (body instanceof URLSearchParams) return body.toString();
  return Buffer.from(await new Response(body).arrayBuffer());
}

async function send(
  url: URL,
  init: RequestInit,
  agent: HttpAgent,
  lookup: ReturnType<typeof guardedLookup>,
): Promise<Response> {
  const headers = new Headers(init.headers);
  const body = await bodyOf(init);
  if (body !== undefined) {
    if (!headers.has('content-length')) headers.set('content-length', String(Buffer.byteLength(body)));
    if (init.body instanceof URLSearchParams && !headers.has('content-type'))
      headers.set('content-type', 'application/x-www-form-urlencoded;charset=UTF-8');
  }
  const signal = init.signal ?? undefined;
  signal?.throwIfAborted();
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<Response>((resolve, reject) => {
    const req = request(
      url,
      { method: init.method ?? 'GET', headers: Object.fromEntries(headers.entries()), agent, lookup },
      (res) => {
        const status = res.statusCode ?? 502;
        if (status >= 300 && status < 400 && init.redirect === 'error') {
          res.resume();
          reject(new TypeError('fetch failed: the server answered with a redirect', { cause: { status } }));
          return;
        }
        resolve(toResponse(res, status));
      },
    );
    const onAbort = () => req.destroy(signal?.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });
    req.once('close', () => signal?.removeEventListener('abort', onAbort));
    req.on('error', (error) => {
      if (signal?.aborted) return reject(signal.reason as Error);
      reject(error instanceof DtrError ? error : new TypeError(`fetch failed: ${error.message}`, { cause: error }));
    });
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function toResponse(res: IncomingMessage, status: number): Response {
  const headers = new Headers();
  for (const [name, value] of Object.entries(res.headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
  }
  if ([101, 204, 205, 304].includes(status) || res.method === 'HEAD') {
    res.resume();
    return new Response(null, { status, statusText: res.statusMessage ?? '', headers });
  }
  // Bodies stream (the caller's capped reader stops a large one early); compressed ones are decoded.
  const encoding = (res.headers['content-encoding'] ?? '').toLowerCase();
  const decoder =
    encoding === 'gzip' || encoding === 'x-gzip'
      ? createGunzip()
      : encoding === 'deflate'
        ? createInflate()
        : encoding === 'br'
          ? createBrotliDecompress()
          : undefined;
  const stream: Readable = decoder ? res.pipe(decoder) : res;
  if (decoder) {
    res.once('error', (error) => decoder.destroy(error));
    headers.delete('content-encoding');
    headers.delete('content-length');
  }
  return new Response(Readable.toWeb(stream) as ReadableStream<Uint8Array>, {
    status,
    statusText: res.statusMessage ?? '',
    headers,
  });
}
