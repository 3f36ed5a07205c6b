import { generateKeyPairSync, randomBytes } from 'node:crypto';
import forge from 'node-forge';

/** What a test certificate authority hands out: PEM texts, and the chain as base64 DER (leaf first) for `x5c`. */
export interface IssuedCertificate {
  certificatePem: string;
  privateKeyPem: string;
  /** The leaf then the issuing CA, base64 DER, as a JWS `x5c` header carries them. */
  x5c: string[];
  /** The leaf, its key and the CA certificate as one PKCS#12 file protected by `passphrase`. */
  pkcs12(passphrase: string): Buffer;
}

export interface IssueOptions {
  /** SAN URIs of the certificate (`iss` of what it signs). At least one. */
  sanUris: string[];
  /** Default: one hour ago. */
  notBefore?: Date;
  /** Default: one year after notBefore. */
  notAfter?: Date;
  commonName?: string;
}

const toDer = (cert: forge.pki.Certificate): string =>
  forge.util.encode64(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes());

/**
 * A certificate authority for tests and the sandbox only (never for production identities): a self-signed RSA anchor
 * that issues end-entity certificates with SAN URIs, as a UDAP community's CA would. Keys are RSA 2048 (RS256 is the
 * algorithm every UDAP party must support).
 * @see https://hl7.org/fhir/us/udap-security/general.html#certificates
 */
export class TestCertificateAuthority {
  private constructor(
    private readonly cert: forge.pki.Certificate,
    private readonly key: forge.pki.rsa.PrivateKey,
  ) {}

  /** A new anchor named `name`, valid from one hour ago for ten years. */
  static create(name: string): TestCertificateAuthority {
    const keys = rsaKeyPair();
    const cert = forge.pki.createCertificate();
    cert.publicKey = keys.publicKey;
    cert.serialNumber = serial();
    cert.validity.notBefore = new Date(Date.now() - 3600_000);
    cert.validity.notAfter = new Date(Date.now() + 10 * 365 * 24 * 3600_000);
    const subject = [{ name: 'commonName', value: name }];
    cert.setSubject(subject);
    cert.setIssuer(subject);
    cert.setExtensions([
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      { name: 'subjectKeyIdentifier' },
    ]);
    cert.sign(keys.privateKey, forge.md.sha256.create());
    return new TestCertificateAuthority(cert, keys.privateKey);
  }

  /** The anchor certificate, PEM, for a party's trust store. */
  get anchorPem(): string {
    return forge.pki.certificateToPem(this.cert);
  }

  /** An end-entity certificate for `sanUris`, signed by this CA. */
  issue(options: IssueOptions): IssuedCertificate {
    if (options.sanUris.length === 0) throw new Error('a UDAP certificate needs at least one SAN URI');
    const keys = rsaKeyPair();
    const cert = forge.pki.createCertificate();
    cert.publicKey = keys.publicKey;
    cert.serialNumber = serial();
    const notBefore = options.notBefore ?? new Date(Date.now() - 3600_000);
    cert.validity.notBefore = notBefore;
    cert.validity.notAfter = options.notAfter ?? new Date(notBefore.getTime() + 365 * 24 * 3600_000);
    cert.setSubject([{ name: 'commonName', value: options.commonName ?? options.sanUris[0]!.slice(0, 64) }]);
    cert.setIssuer(this.cert.subject.attributes);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      // type 6: uniformResourceIdentifier
      { name: 'subjectAltName', altNames: options.sanUris.map((value) => ({ type: 6, value })) },
      { name: 'authorityKeyIdentifier', keyIdentifier: this.cert.generateSubjectKeyIdentifier().getBytes() },
    ]);
    cert.sign(this.key, forge.md.sha256.create());
    const ca = this.cert;
    return {
      certificatePem: forge.pki.certificateToPem(cert),
      privateKeyPem: forge.pki.privateKeyInfoToPem(
        forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(keys.privateKey)),
      ),
      x5c: [toDer(cert), toDer(ca)],
      pkcs12: (passphrase) =>
        Buffer.from(
          forge.asn1
            .toDer(forge.pkcs12.toPkcs12Asn1(keys.privateKey, [cert, ca], passphrase, { algorithm: '3des' }))
            .getBytes(),
          'binary',
        ),
    };
  }
}

/** An RSA 2048 key pair made by Node's crypto (forge's own generator is pure JavaScript and slow). */
function rsaKeyPair(): { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const key = forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs1', format: 'pem' }).toString());
  return { privateKey: key, publicKey: forge.pki.setRsaPublicKey(key.n, key.e) };
}

/** A positive random serial number (hex, leading byte below 0x80). */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString('hex');
}
