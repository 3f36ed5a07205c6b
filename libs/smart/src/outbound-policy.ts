import { DtrError } from '@dtr/kernel';

/**
 * Where our server may send requests and credentials. TLS is required for every outbound call, except to
 * loopback hosts when explicitly allowed (development, tests, the sandbox).
 */
export interface OutboundPolicy {
  allowInsecureLoopback: boolean;
}

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])$/;

export function isLoopback(url: URL): boolean {
  return LOOPBACK.test(url.hostname);
}

/** Parses and checks an outbound URL: https, or http to loopback when the policy allows it. */
export function assertOutboundUrl(value: string, policy: OutboundPolicy, what: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch (cause) {
    throw new DtrError('INVALID_INPUT', `${what} is not a URL`, { cause });
  }
  if (url.username || url.password) throw new DtrError('INVALID_INPUT', `${what} must not carry credentials`);
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:' && policy.allowInsecureLoopback && isLoopback(url)) return url;
  throw new DtrError('FORBIDDEN', `${what} must use https (${url.origin} refused)`);
}

/** Normalises a FHIR base URL for comparison: no trailing slash, no query or fragment. */
export function normaliseBaseUrl(value: string): string {
  const url = new URL(value);
  url.hash = '';
  url.search = '';
  return url.toString().replace(/\/+$/, '');
}
