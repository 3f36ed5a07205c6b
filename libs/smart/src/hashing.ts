import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Values that grant something (state, session ids) are stored only as this hash. */
export function sha256(value: string): string {
  return createHash('sha256').update(value).digest('base64url');
}

/** 256 random bits, base64url: session ids and browser bindings. */
export function opaqueId(): string {
  return randomBytes(32).toString('base64url');
}

export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
