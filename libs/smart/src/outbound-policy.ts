import { DISCOVERY_RESPONSE_LIMITS, EHR_RESPONSE_LIMITS, type UpstreamLimits } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';

/** How much an upstream may answer (see README, Limits). */
export interface OutboundLimits {
  /** EHR FHIR answers (a search page, a read). */
  ehr: UpstreamLimits;
  /** Payer answers (`$questionnaire-package`, `$expand`, `$next-question`). */
  payer: UpstreamLimits;
  /** smart-configuration, token answers, JWKS. */
  discovery: UpstreamLimits;
  /** Resources in one questionnaire package. */
  packageMaxResources: number;
  /** `$expand` pages per value set, and codes in one expansion. */
  expandMaxPages: number;
  expandMaxCodes: number;
}

export const DEFAULT_OUTBOUND_LIMITS: OutboundLimits = {
  ehr: EHR_RESPONSE_LIMITS,
  payer: { maxBytes: 32 * 1024 * 1024, maxDepth: 100 },
  discovery: DISCOVERY_RESPONSE_LIMITS,
  packageMaxResources: 5000,
  expandMaxPages: 20,
  expandMaxCodes: 20_000,
};

/**
 * Where our server may send requests and credentials, and how much it accepts back. TLS is required for every
 * outbound call, except to loopback hosts when explicitly allowed (development, tests, the sandbox). Connections to
 * loopback (unless allowed), private, link-local, unique-local and reserved addresses are refused when they are made
 * (see outboundFetch), except inside `allowedNetworks`.
 */
export interface OutboundPolicy {
  allowInsecureLoopback: boolean;
  /** Networks (CIDR) of private addresses that may be reached: an EHR on the hospital network. */
  allowedNetworks?: string[];
  limits?: OutboundLimits;
}

/** The policy's limits, or the defaults. */
export function limitsOf(policy: OutboundPolicy): OutboundLimits {
  return policy.limits ?? DEFAULT_OUTBOUND_LIMITS;
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
