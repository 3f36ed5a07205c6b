import { createHash } from 'node:crypto';
import { request as httpsRequest, Agent } from 'node:https';
import { DtrError } from '@dtr/kernel';
import { type OutboundPolicy, outboundFetch } from '@dtr/smart';

/** What a payer's mutual TLS needs: our client certificate and key, and the CA of the payer's server certificate. */
export interface TlsCredentials {
  certificate: string;
  privateKey: string;
  /** PEM of the CA(s) that sign the payer's server certificate, when it is not a public CA. */
  serverCa?: string;
}

/**
 * A `fetch` that presents our client certificate (mutual TLS) on every connection, for one payer: its token endpoint
 * and FHIR calls go through it. https only: a client certificate over plain http would mean nothing. Connections are
 * checked against the outbound policy as every other outbound call's are (see outboundFetch).
 */
export function mutualTlsFetch(credentials: TlsCredentials, policy: OutboundPolicy): typeof fetch {
  // One keep-alive connection pool per set of credentials for the process, not one per session.
  const key = createHash('sha256')
    .update(`${credentials.certificate}\u0000${credentials.privateKey}\u0000${credentials.serverCa ?? ''}`)
    .digest('hex');
  let byPolicy = fetches.get(key);
  if (!byPolicy) {
    if (fetches.size >= 100) fetches.clear();
    fetches.set(key, (byPolicy = new WeakMap()));
  }
  let fn = byPolicy.get(policy);
  if (!fn) {
    fn = outboundFetch(policy, {
      certificate: credentials.certificate,
      privateKey: credentials.privateKey,
      ...(credentials.serverCa ? { serverCa: credentials.serverCa } : {}),
    });
    byPolicy.set(policy, fn);
  }
  return fn;
}
const fetches = new Map<string, WeakMap<OutboundPolicy, typeof fetch>>();

/** A `fetch` over node:https with this agent's TLS settings (https URLs only). */
export function agentFetch(agent: Agent): typeof fetch {
  const tlsFetch = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input.toString() : input.url);
    if (url.protocol !== 'https:')
      throw new DtrError('CONFIGURATION', `mutual TLS needs https, not ${url.protocol} (${url.origin})`);
    const headers = new Headers(init.headers);
    const body =
      init.body === undefined || init.body === null
        ? undefined
        : typeof init.body === 'string'
          ? init.body
          : Buffer.from(await new Response(init.body).arrayBuffer());
    if (body !== undefined && !headers.has('content-length'))
      headers.set('content-length', String(Buffer.byteLength(body)));
    return new Promise<Response>((resolve, reject) => {
      const req = httpsRequest(
        url,
        {
          method: init.method ?? 'GET',
          headers: Object.fromEntries(headers.entries()),
          agent,
          ...(init.signal ? { signal: init.signal } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const responseHeaders = new Headers();
            for (const [name, value] of Object.entries(res.headers)) {
              if (value === undefined) continue;
              for (const v of Array.isArray(value) ? value : [value]) responseHeaders.append(name, v);
            }
            const status = res.statusCode ?? 502;
            const nullBody = status === 204 || status === 304;
            resolve(
              new Response(nullBody ? null : Buffer.concat(chunks), {
                status,
                statusText: res.statusMessage ?? '',
                headers: responseHeaders,
              }),
            );
          });
        },
      );
      req.on('error', (error) => reject(new TypeError(`fetch failed: ${error.message}`, { cause: error })));
      if (body !== undefined) req.write(body);
      req.end();
    });
  };
  return tlsFetch as typeof fetch;
}
