import { type IssuedCertificate, TestCertificateAuthority } from '@dtr/udap';
import express, { type Request, type Response } from 'express';
import type { FaultSettings } from '../shared/faults.js';
import type { PeerServer } from '../shared/peer-server.js';

/** The URI a client names in `?community=` to ask for metadata signed with this community's certificate. */
export const SANDBOX_COMMUNITY_URI = 'urn:dtr-sandbox:udap-community';

/** What a server's signed metadata can be made to get wrong (fault `udapMetadata`), each a refusal our client must show. */
export type UdapMetadataFault = NonNullable<FaultSettings['udapMetadata']>;

/**
 * The sandbox's UDAP trust community (dev/test only): one anchor every sandbox party trusts, server certificates whose
 * SAN URI is exactly the base URL each sandbox server answers for, and a second CA nobody trusts, for the faults.
 * Certificates are made once per base and kept for the life of the process.
 * @see https://hl7.org/fhir/us/udap-security/general.html#certificates
 */
export class SandboxUdapCommunity {
  readonly ca = TestCertificateAuthority.create('Sandbox UDAP Community');
  /** Not an anchor of anyone: what it issues must be refused (`untrusted-anchor`). */
  readonly untrustedCa = TestCertificateAuthority.create('Untrusted UDAP Community');
  private readonly issued = new Map<string, IssuedCertificate>();

  get anchorPem(): string {
    return this.ca.anchorPem;
  }

  /** The community certificate of the server whose base URL is `baseUrl` (its SAN URI). */
  serverCertificate(baseUrl: string): IssuedCertificate {
    return this.once(`server ${baseUrl}`, () => this.ca.issue({ sanUris: [baseUrl] }));
  }

  /** A certificate with the given defect, for a server whose base URL is `baseUrl`. */
  faultyCertificate(baseUrl: string, fault: Exclude<UdapMetadataFault, 'bad-signature'>): IssuedCertificate {
    return this.once(`${fault} ${baseUrl}`, () => {
      if (fault === 'untrusted-anchor') return this.untrustedCa.issue({ sanUris: [baseUrl] });
      if (fault === 'san-mismatch') return this.ca.issue({ sanUris: [`${baseUrl}/not-this-server`] });
      const day = 24 * 3600_000;
      return this.ca.issue({
        sanUris: [baseUrl],
        notBefore: new Date(Date.now() - 2 * day),
        notAfter: new Date(Date.now() - day),
      });
    });
  }

  private once(key: string, make: () => IssuedCertificate): IssuedCertificate {
    let cert = this.issued.get(key);
    if (!cert) {
      cert = make();
      this.issued.set(key, cert);
    }
    return cert;
  }
}

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);
const MAX_SAN_URIS = 10;

/**
 * For `npm start` users (dev sandbox only, loopback callers only): `GET /udap/anchor.pem` (the community anchor for
 * our server's trust store) and `POST /udap/certificates {sanUris, format?: 'pem'|'pkcs12', passphrase?}` (a client
 * certificate of the community: PEM certificate and key as JSON, or a PKCS#12 file).
 */
export function mountCommunityRoutes(peer: PeerServer, community: SandboxUdapCommunity): void {
  peer.app.get('/udap/anchor.pem', (_req: Request, res: Response) => {
    res.type('application/x-pem-file').send(community.anchorPem);
  });
  peer.app.post('/udap/certificates', express.json({ limit: '16kb' }), (req: Request, res: Response) => {
    if (!LOOPBACK.has(req.socket.remoteAddress ?? '')) {
      res
        .status(403)
        .json({ error: 'forbidden', error_description: 'certificates are only issued to loopback callers' });
      return;
    }
    const problem = certificateRequestProblem(req.body);
    if (problem) {
      res.status(400).json({ error: 'invalid_request', error_description: problem });
      return;
    }
    const body = req.body as { sanUris: string[]; format?: 'pem' | 'pkcs12'; passphrase?: string };
    const cert = community.ca.issue({ sanUris: body.sanUris });
    if (body.format === 'pkcs12') {
      res.status(201).type('application/x-pkcs12').send(cert.pkcs12(body.passphrase!));
      return;
    }
    res.status(201).json({ certificatePem: cert.certificatePem, privateKeyPem: cert.privateKeyPem, x5c: cert.x5c });
  });
}

/** Why a certificate request is refused, or undefined when it is fine. */
function certificateRequestProblem(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'the body must be a JSON object';
  const { sanUris, format, passphrase } = body as Record<string, unknown>;
  if (!Array.isArray(sanUris) || sanUris.length === 0 || sanUris.length > MAX_SAN_URIS)
    return `sanUris must be a list of 1 to ${MAX_SAN_URIS} absolute URIs`;
  for (const uri of sanUris) {
    if (typeof uri !== 'string' || uri.length > 512 || !URL.canParse(uri) || /[\s"\\,]/.test(uri))
      return `sanUris holds ${JSON.stringify(String(uri)).slice(0, 80)}, which is not an absolute URI`;
  }
  if (format !== undefined && format !== 'pem' && format !== 'pkcs12') return "format must be 'pem' or 'pkcs12'";
  if (format === 'pkcs12' && (typeof passphrase !== 'string' || passphrase.length < 4 || passphrase.length > 256))
    return 'a pkcs12 file needs a passphrase of 4 to 256 characters';
  if (format !== 'pkcs12' && passphrase !== undefined) return 'passphrase is only for format pkcs12';
  return undefined;
}
