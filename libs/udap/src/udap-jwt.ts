import { randomBytes } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import type { UdapIdentity } from './udap.types.js';

/** The longest life UDAP allows a software statement or an authentication token: `exp` − `iat` ≤ 300 s. */
const UDAP_JWT_MAX_LIFETIME_SECONDS = 300;

/** A fresh `jti`: 128 random bits, so that no two of our JWTs share one before they expire. */
const newJti = (): string => randomBytes(16).toString('base64url');

/**
 * A UDAP JWT: compact JWS whose header has `alg` and `x5c` (leaf first) and no `kid` (the certificate names the key),
 * with `iat`, `exp` = iat + 300 s and a fresh `jti` added to `claims`.
 * @see https://hl7.org/fhir/us/udap-security/general.html#jwt-headers
 * @see https://hl7.org/fhir/us/udap-security/general.html#jwt-claims
 */
export async function signUdapJwt(
  identity: Pick<UdapIdentity, 'alg' | 'x5c' | 'privateKey'>,
  claims: JWTPayload,
  now: Date,
): Promise<string> {
  const iat = Math.floor(now.getTime() / 1000);
  return new SignJWT({ ...claims, iat, exp: iat + UDAP_JWT_MAX_LIFETIME_SECONDS, jti: newJti() })
    .setProtectedHeader({ alg: identity.alg, x5c: [...identity.x5c] })
    .sign(identity.privateKey);
}
