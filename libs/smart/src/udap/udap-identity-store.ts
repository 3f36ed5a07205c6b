import { createPrivateKey, randomUUID, X509Certificate } from 'node:crypto';
import { Clock, DtrError } from '@dtr/kernel';
import {
  type CertificateMaterial,
  parseCertificateMaterial,
  type UdapAlg,
  type UdapIdentity,
  udapIdentity,
} from '@dtr/udap';
import type { DataSource } from 'typeorm';
import { SecretBox } from '../secret-box.js';
import { UdapIdentityProvider } from '../smart-client.js';
import { type UdapIdentityRow, UdapIdentityRepository } from './udap-identity.repository.js';

/** One of our UDAP certificates as an operator sees it: never its key. */
export interface UdapCertificateView {
  id: string;
  sanUris: string[];
  subject: string;
  issuer: string;
  notBefore: string;
  notAfter: string;
  keyType: 'rsa' | 'ec';
  alg: UdapAlg;
  fingerprint256: string;
  /** Certificates in the stored chain (the leaf and its intermediates). */
  chainLength: number;
  createdAt: string;
}

export interface TrustAnchorView {
  id: string;
  community: string;
  subject: string;
  notAfter: string;
  fingerprint256: string;
}

/** Certificate material as an operator hands it over: PEM texts, or a PKCS#12 file and its passphrase. */
export type UdapCertificateInput =
  { certificatePem: string; privateKeyPem: string; chainPem?: string } | { pkcs12: Buffer; passphrase: string };

const keyAad = (id: string) => `udap_identity:${id}`;
const oneLine = (dn: string) => dn.replace(/\n/g, ', ');

/**
 * Our UDAP certificates and the trust anchors of the communities we belong to. A private key is sealed at rest (AAD
 * names its row) and opened only in memory, when a software statement or a client assertion is signed. One
 * certificate may carry several SAN URIs: each is one identity of ours (a tenant's `supplement` and `disclose`
 * registrations, a payer registration), and `identityFor` picks the certificate by the SAN URI a registration names.
 * @see https://hl7.org/fhir/us/udap-security/general.html#certificates
 */
export class UdapIdentityStore extends UdapIdentityProvider {
  private readonly rows: UdapIdentityRepository;

  constructor(
    dataSource: DataSource,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
  ) {
    super();
    this.rows = new UdapIdentityRepository(dataSource);
  }

  /**
   * Adds a certificate with its key (PEM, or PKCS#12 with its passphrase). Refused with INVALID_INPUT when it cannot
   * be read, the key does not belong to it, it has no SAN URI or it has expired. Adding the same certificate again
   * answers the stored one.
   */
  async add(input: UdapCertificateInput): Promise<UdapCertificateView> {
    const material = readMaterial(input);
    const leaf = new X509Certificate(Buffer.from(material.x5c[0]!, 'base64'));
    let matches = false;
    try {
      matches = leaf.checkPrivateKey(createPrivateKey(material.privateKeyPem));
    } catch {
      matches = false;
    }
    if (!matches) throw new DtrError('INVALID_INPUT', 'the private key does not belong to the certificate');
    if (material.sanUris.length === 0)
      throw new DtrError(
        'INVALID_INPUT',
        'the certificate has no SAN URI: a UDAP certificate names each of our identities as a uniformResourceIdentifier subject alternative name',
      );
    if (material.notAfter.getTime() <= this.clock.now().getTime())
      throw new DtrError('INVALID_INPUT', `the certificate expired on ${material.notAfter.toISOString()}`);
    const id = randomUUID();
    const fingerprint256 = leaf.fingerprint256;
    const inserted = await this.rows.insert({
      id,
      x5c: material.x5c,
      san_uris: material.sanUris,
      subject: oneLine(material.subject),
      issuer: oneLine(material.issuer),
      not_before: material.notBefore,
      not_after: material.notAfter,
      key_type: material.keyType,
      alg: material.keyType === 'ec' ? 'ES256' : 'RS256',
      private_key_enc: this.secrets.seal(material.privateKeyPem, keyAad(id)),
      fingerprint256,
    });
    const stored = inserted ? undefined : await this.rows.byFingerprint(fingerprint256);
    return (await this.list()).find((c) => c.id === (stored?.id ?? id))!;
  }

  async list(): Promise<UdapCertificateView[]> {
    return (await this.rows.list()).map(toView);
  }

  async remove(id: string): Promise<boolean> {
    return this.rows.remove(id);
  }

  /**
   * The identity that signs as `sanUri`, its key opened in memory: the valid certificate naming it that expires
   * last. CONFIGURATION when none does (with what to run).
   */
  async identityFor(sanUri: string): Promise<UdapIdentity> {
    const [row] = await this.rows.forSan(sanUri, this.clock.now());
    if (!row) {
      const known = await this.rows.hasSan(sanUri);
      throw new DtrError(
        'CONFIGURATION',
        known
          ? `every certificate for ${sanUri} has expired or is not yet valid: add a current one with "dtr udap certs add"`
          : `no UDAP certificate names ${sanUri}: add one with "dtr udap certs add" (its SAN URIs must include it)`,
      );
    }
    return udapIdentity(
      {
        x5c: row.x5c,
        sanUris: row.san_uris,
        keyType: row.key_type,
        privateKeyPem: this.secrets.open(row.private_key_enc, keyAad(row.id)),
      },
      sanUri,
      row.alg,
    );
  }

  /** Adds a community's trust anchor (a CA certificate, PEM). Adding the same one again changes nothing. */
  async addAnchor(community: string, pem: string): Promise<TrustAnchorView> {
    let url: URL;
    try {
      url = new URL(community);
    } catch {
      throw new DtrError('INVALID_INPUT', `community: must be a URI (got ${JSON.stringify(community.slice(0, 100))})`);
    }
    if (community.length > 500 || url.protocol === 'javascript:')
      throw new DtrError('INVALID_INPUT', 'community: must be a URI of at most 500 characters');
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem);
    } catch {
      throw new DtrError('INVALID_INPUT', 'pem: is not a readable PEM certificate');
    }
    if (!cert.ca) throw new DtrError('INVALID_INPUT', 'pem: is not a CA certificate (basicConstraints cA is not set)');
    if (new Date(cert.validTo).getTime() <= this.clock.now().getTime())
      throw new DtrError('INVALID_INPUT', `pem: the anchor expired on ${new Date(cert.validTo).toISOString()}`);
    const row = {
      community,
      pem: cert.toString(),
      subject: oneLine(cert.subject),
      not_after: new Date(cert.validTo),
      fingerprint256: cert.fingerprint256,
    };
    await this.rows.insertAnchor(row);
    return (await this.listAnchors(community)).find((a) => a.fingerprint256 === row.fingerprint256)!;
  }

  async listAnchors(community?: string): Promise<TrustAnchorView[]> {
    return (await this.rows.anchors(community)).map((a) => ({
      id: a.id,
      community: a.community,
      subject: a.subject,
      notAfter: a.not_after.toISOString(),
      fingerprint256: a.fingerprint256,
    }));
  }

  async removeAnchor(id: string): Promise<boolean> {
    return this.rows.removeAnchor(id);
  }

  /** The PEM anchors to check a server's metadata with: one community's, or every community's when none is named. */
  async anchorsPem(community?: string): Promise<string[]> {
    const anchors = await this.rows.anchors(community);
    if (anchors.length === 0)
      throw new DtrError(
        'CONFIGURATION',
        community === undefined
          ? 'no UDAP trust anchor is configured: add one with "dtr udap anchors add --community <uri> --pem <file>"'
          : `no trust anchor for the community ${community}: add one with "dtr udap anchors add --community ${community} --pem <file>"`,
      );
    return anchors.map((a) => a.pem);
  }
}

/** The material parsed by @dtr/udap; anything it cannot read becomes an INVALID_INPUT naming what to check. */
function readMaterial(input: UdapCertificateInput): CertificateMaterial {
  try {
    return parseCertificateMaterial(input);
  } catch (error) {
    if (error instanceof DtrError) {
      if (error.code === 'INVALID_INPUT') throw error;
      throw new DtrError('INVALID_INPUT', error.message, { cause: error, details: error.details });
    }
    throw new DtrError(
      'INVALID_INPUT',
      'pkcs12' in input
        ? 'the PKCS#12 file could not be opened: wrong passphrase, or not a PKCS#12 file'
        : 'the certificate or key could not be read: PEM certificate and unencrypted PKCS#8 or PKCS#1 key expected',
      { cause: error },
    );
  }
}

function toView(row: Omit<UdapIdentityRow, 'private_key_enc'>): UdapCertificateView {
  return {
    id: row.id,
    sanUris: row.san_uris,
    subject: row.subject,
    issuer: row.issuer,
    notBefore: row.not_before.toISOString(),
    notAfter: row.not_after.toISOString(),
    keyType: row.key_type,
    alg: row.alg,
    fingerprint256: row.fingerprint256,
    chainLength: row.x5c.length,
    createdAt: row.created_at.toISOString(),
  };
}
