import type { X509Certificate } from 'node:crypto';
import { DtrError } from '@dtr/kernel';
import { type UdapRefusal, verifyChain } from '@dtr/udap';
import { compactVerify, decodeProtectedHeader } from 'jose';

/** Signature algorithms the sandbox's UDAP servers accept (RS256 every party must support). */
export const UDAP_SIGNING_ALGS = ['RS256', 'RS384', 'ES256', 'ES384'] as const;

/** A UDAP JWT the sandbox does not accept, with the refusal reason a test can match. */
export class UdapJwtRefused extends Error {
  constructor(
    readonly reason: UdapRefusal,
    message: string,
  ) {
    super(message);
  }
}

export interface VerifiedUdapJwt {
  claims: Record<string, unknown>;
  alg: string;
  leaf: X509Certificate;
  /** The SAN URIs of the leaf certificate. */
  sanUris: string[];
}

/**
 * The checks every UDAP JWT from a client gets (software statements, authentication tokens): compact JWS, `alg`
 * allowed, `x5c` chaining to one of `anchorsPem` with every certificate valid now, signed by the leaf's key.
 * Claims are the caller's to check.
 * @see https://hl7.org/fhir/us/udap-security/general.html#jwt-headers
 */
export async function verifyUdapJwt(jwt: string, anchorsPem: readonly string[], now: Date): Promise<VerifiedUdapJwt> {
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(jwt) as Record<string, unknown>;
  } catch {
    throw new UdapJwtRefused('bad-claims', 'the JWT is not a compact JWS with a readable header');
  }
  const alg = header['alg'];
  if (typeof alg !== 'string' || !(UDAP_SIGNING_ALGS as readonly string[]).includes(alg))
    throw new UdapJwtRefused('unsupported-alg', `alg ${String(alg)} is not one of ${UDAP_SIGNING_ALGS.join(', ')}`);
  if (header['x5c'] === undefined) throw new UdapJwtRefused('bad-claims', 'the JWT header has no x5c');
  let chain: { leaf: X509Certificate; sanUris: string[] };
  try {
    chain = verifyChain(header['x5c'], anchorsPem, now);
  } catch (error) {
    if (error instanceof DtrError && typeof error.details['udap'] === 'string')
      throw new UdapJwtRefused(error.details['udap'] as UdapRefusal, error.message.replace(/ \(udap: [a-z-]+\)$/, ''));
    throw error;
  }
  let payload: Uint8Array;
  try {
    payload = (await compactVerify(jwt, chain.leaf.publicKey, { algorithms: [alg] })).payload;
  } catch {
    throw new UdapJwtRefused('bad-signature', 'the JWT signature does not verify with the key of its x5c certificate');
  }
  let claims: unknown;
  try {
    claims = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    throw new UdapJwtRefused('bad-claims', 'the JWT payload is not JSON');
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims))
    throw new UdapJwtRefused('bad-claims', 'the JWT payload is not a JSON object');
  return { claims: claims as Record<string, unknown>, alg, leaf: chain.leaf, sanUris: chain.sanUris };
}

/** Clock skew tolerated on `iat` (seconds). */
const SKEW_SECONDS = 60;

/**
 * `iss`, `exp`, `iat` and `jti` as UDAP requires them of a client's JWT: `exp` not passed and at most `maxLifetime`
 * seconds after `iat`, `iat` not in the future, `jti` present.
 * @see https://hl7.org/fhir/us/udap-security/general.html#jwt-claims
 */
export function checkLifetime(
  claims: Record<string, unknown>,
  now: Date,
  maxLifetime = 300,
): { iss: string; jti: string; exp: number } {
  const { iss, exp, iat, jti } = claims;
  if (typeof iss !== 'string' || iss === '') throw new UdapJwtRefused('bad-claims', 'iss is missing');
  if (typeof exp !== 'number' || typeof iat !== 'number')
    throw new UdapJwtRefused('bad-claims', 'exp and iat must be numbers (seconds since the epoch)');
  const nowSeconds = Math.floor(now.getTime() / 1000);
  if (exp <= nowSeconds) throw new UdapJwtRefused('bad-claims', 'the JWT has expired (exp has passed)');
  if (iat > nowSeconds + SKEW_SECONDS) throw new UdapJwtRefused('bad-claims', 'iat is in the future');
  if (exp - iat > maxLifetime)
    throw new UdapJwtRefused('bad-claims', `exp is more than ${maxLifetime} seconds after iat`);
  if (typeof jti !== 'string' || jti === '') throw new UdapJwtRefused('bad-claims', 'jti is missing');
  return { iss, jti, exp };
}

/** `aud` equal to `expected`: a string, or a list of exactly that one string. */
export function audienceIs(claims: Record<string, unknown>, expected: string): boolean {
  const aud = claims['aud'];
  return Array.isArray(aud) ? aud.length === 1 && aud[0] === expected : aud === expected;
}

/**
 * The `jti` values seen per issuer until their JWT expires: a second use is a replay.
 * @see https://hl7.org/fhir/us/udap-security/general.html#jwt-claims
 */
export class JtiLedger {
  private readonly seen = new Map<string, number>();

  /** Records the jti; false when it was already used by the same issuer and the earlier JWT has not expired. */
  use(iss: string, jti: string, exp: number, now: Date): boolean {
    const nowSeconds = Math.floor(now.getTime() / 1000);
    for (const [key, until] of this.seen) if (until < nowSeconds) this.seen.delete(key);
    const key = JSON.stringify([iss, jti]);
    if (this.seen.has(key)) return false;
    this.seen.set(key, exp);
    return true;
  }
}
