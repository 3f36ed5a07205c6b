import { X509Certificate } from 'node:crypto';
import { DtrError } from '@dtr/kernel';

/** Why a UDAP party's certificate chain, signature or claims were not accepted; each has a README entry. */
export type UdapRefusal =
  | 'bad-signature'
  | 'untrusted-anchor'
  | 'expired-certificate'
  | 'not-yet-valid-certificate'
  | 'san-mismatch'
  | 'replayed-jti'
  | 'bad-claims'
  | 'unsupported-alg';

/** A refusal of a peer's UDAP material, with its reason in `details.udap` (and in the message). */
export function udapRefusal(
  reason: UdapRefusal,
  message: string,
  code: 'UPSTREAM_ERROR' | 'INVALID_INPUT' = 'UPSTREAM_ERROR',
) {
  return new DtrError(code, `${message} (udap: ${reason})`, { details: { udap: reason } });
}

/** The SAN URIs of a certificate (Node prints them `URI:…`, quoting those that hold a comma or quote). */
export function sanUrisOf(cert: X509Certificate): string[] {
  const text = cert.subjectAltName ?? '';
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|, )URI:("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    const raw = m[1]!;
    out.push(raw.startsWith('"') ? (JSON.parse(raw) as string) : raw);
  }
  return out;
}

const MAX_CHAIN = 6;

/**
 * The leaf of `x5c` (base64 DER, leaf first, then intermediates in any order) once a path from it to one of
 * `anchorsPem` is found, every certificate on the path signed by the next and valid at `now`. Throws a UDAP refusal
 * naming what failed: `untrusted-anchor` (no path), `expired-certificate`, `not-yet-valid-certificate`.
 * @see https://hl7.org/fhir/us/udap-security/general.html#certificates
 */
export function verifyChain(
  x5c: unknown,
  anchorsPem: readonly string[],
  now: Date,
): { leaf: X509Certificate; sanUris: string[] } {
  if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > MAX_CHAIN || !x5c.every((c) => typeof c === 'string'))
    throw udapRefusal('bad-claims', `x5c must be a list of 1 to ${MAX_CHAIN} base64 certificates`);
  let chain: X509Certificate[];
  try {
    chain = (x5c as string[]).map((c) => new X509Certificate(Buffer.from(c, 'base64')));
  } catch {
    throw udapRefusal('bad-claims', 'x5c holds something that is not a DER certificate');
  }
  const anchors = anchorsPem.map((pem) => new X509Certificate(pem));
  const leaf = chain[0]!;
  let current = leaf;
  for (let depth = 0; depth <= MAX_CHAIN; depth++) {
    validAt(current, now);
    const anchor = anchors.find((a) => current.checkIssued(a) && current.verify(a.publicKey));
    if (anchor) {
      validAt(anchor, now);
      return { leaf, sanUris: sanUrisOf(leaf) };
    }
    const next = chain.find((c) => c !== current && c.ca && current.checkIssued(c) && current.verify(c.publicKey));
    if (!next) break;
    current = next;
  }
  throw udapRefusal(
    'untrusted-anchor',
    `the certificate of ${leaf.subject.replace(/\n/g, ', ')} does not chain to a trusted anchor`,
  );
}

function validAt(cert: X509Certificate, now: Date): void {
  if (new Date(cert.validTo).getTime() < now.getTime())
    throw udapRefusal(
      'expired-certificate',
      `the certificate of ${cert.subject.replace(/\n/g, ', ')} expired on ${new Date(cert.validTo).toISOString()}`,
    );
  if (new Date(cert.validFrom).getTime() > now.getTime())
    throw udapRefusal(
      'not-yet-valid-certificate',
      `the certificate of ${cert.subject.replace(/\n/g, ', ')} is valid only from ${new Date(cert.validFrom).toISOString()}`,
    );
}
