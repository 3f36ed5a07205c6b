import { createPrivateKey, KeyObject, X509Certificate } from 'node:crypto';
import { DtrError } from '@dtr/kernel';
import forge from 'node-forge';
import { sanUrisOf } from './certificates.js';
import type { CertificateMaterial, UdapAlg, UdapIdentity } from './udap.types.js';

/** Certificate material as an operator hands it over: PEM texts, or one PKCS#12 file and its passphrase. */
export type CertificateMaterialInput =
  { certificatePem: string; privateKeyPem: string; chainPem?: string } | { pkcs12: Buffer; passphrase: string };

const invalid = (message: string, cause?: unknown) =>
  new DtrError('INVALID_INPUT', message, cause === undefined ? {} : { cause });

/** One line per distinguished name (Node prints them one attribute a line). */
const oneLine = (dn: string) => dn.replace(/\n/g, ', ');

/**
 * Reads and checks a UDAP identity's certificate material: the leaf certificate (the one whose public key matches the
 * private key), its intermediates, and the private key (handed back as PKCS#8 PEM for the caller to seal at rest).
 * Refused with INVALID_INPUT, each with its own message: a wrong PKCS#12 passphrase, no key in the file, a key that
 * does not match the certificate, a leaf without a SAN URI (UDAP's `iss` is one), a key that is neither RSA of 2048
 * bits or more nor EC P-256/P-384.
 * @see https://hl7.org/fhir/us/udap-security/general.html#jwt-headers
 */
export function parseCertificateMaterial(input: CertificateMaterialInput): CertificateMaterial {
  const { key, certificates } = 'pkcs12' in input ? readPkcs12(input.pkcs12, input.passphrase) : readPem(input);
  const keyType = checkKeyType(key);
  const leaf = certificates.find((c) => c.checkPrivateKey(key));
  if (!leaf)
    throw invalid(
      certificates.length === 0
        ? 'no certificate was found beside the private key'
        : 'the private key does not match the certificate (give the key that was issued with it)',
    );
  const sanUris = sanUrisOf(leaf);
  if (sanUris.length === 0)
    throw invalid(
      `the certificate of ${oneLine(leaf.subject)} has no SAN URI: UDAP identifies a client by a uniformResourceIdentifier subject alternative name`,
    );
  const rest = certificates.filter((c) => c !== leaf && !c.raw.equals(leaf.raw));
  const unique = rest.filter((c, i) => rest.findIndex((o) => o.raw.equals(c.raw)) === i);
  return {
    x5c: [leaf, ...unique].map((c) => c.raw.toString('base64')),
    privateKeyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
    sanUris,
    subject: oneLine(leaf.subject),
    issuer: oneLine(leaf.issuer),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    keyType,
  };
}

function readPem(input: { certificatePem: string; privateKeyPem: string; chainPem?: string }): {
  key: KeyObject;
  certificates: X509Certificate[];
} {
  if (typeof input.privateKeyPem !== 'string' || !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(input.privateKeyPem))
    throw invalid('no private key was found in the key PEM (expected -----BEGIN PRIVATE KEY-----)');
  if (/ENCRYPTED PRIVATE KEY|Proc-Type: 4,ENCRYPTED/.test(input.privateKeyPem))
    throw invalid('the private key PEM is encrypted: give it unencrypted, or give a PKCS#12 file with its passphrase');
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: input.privateKeyPem, format: 'pem' });
  } catch (cause) {
    throw invalid('the private key PEM could not be read', cause);
  }
  const leafCerts = pemCertificates(input.certificatePem, 'certificate');
  if (leafCerts.length === 0) throw invalid('no certificate was found in the certificate PEM');
  const chain = input.chainPem === undefined ? [] : pemCertificates(input.chainPem, 'chain');
  return { key, certificates: [...leafCerts, ...chain] };
}

function pemCertificates(text: string, what: string): X509Certificate[] {
  if (typeof text !== 'string') throw invalid(`the ${what} PEM must be text`);
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((pem, i) => {
    try {
      return new X509Certificate(pem);
    } catch (cause) {
      throw invalid(`certificate ${i + 1} of the ${what} PEM could not be read`, cause);
    }
  });
}

const MAX_PKCS12_BYTES = 256 * 1024;

/** The key and certificates of a PKCS#12 file (forge reads the file; Node's crypto reads what is inside). */
function readPkcs12(file: Buffer, passphrase: string): { key: KeyObject; certificates: X509Certificate[] } {
  if (!Buffer.isBuffer(file) || file.length === 0) throw invalid('the PKCS#12 file is empty');
  if (file.length > MAX_PKCS12_BYTES)
    throw invalid(`the PKCS#12 file is larger than ${MAX_PKCS12_BYTES / 1024} KiB: is it the right file?`);
  let p12: forge.pkcs12.Pkcs12Pfx;
  try {
    p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(file.toString('binary')), passphrase);
  } catch (cause) {
    const message = cause instanceof Error ? cause.message : '';
    if (/password/i.test(message))
      throw invalid('the PKCS#12 passphrase is wrong (the file could not be opened with it)', cause);
    throw invalid('the file is not a readable PKCS#12 (.p12/.pfx) file', cause);
  }
  const keyBags = [
    ...(p12.getBags({ bagType: forge.pki.oids.pkcs8ShroudedKeyBag })[forge.pki.oids.pkcs8ShroudedKeyBag!] ?? []),
    ...(p12.getBags({ bagType: forge.pki.oids.keyBag })[forge.pki.oids.keyBag!] ?? []),
  ];
  if (keyBags.length === 0) throw invalid('the PKCS#12 file holds no private key (export it with its key)');
  if (keyBags.length > 1) throw invalid('the PKCS#12 file holds more than one private key: give one identity a file');
  const bag = keyBags[0]!;
  let key: KeyObject;
  try {
    // forge reads RSA keys only; other keys stay as their PrivateKeyInfo.
    const info = bag.key
      ? forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(bag.key as forge.pki.rsa.PrivateKey))
      : (bag.asn1 as forge.asn1.Asn1);
    key = createPrivateKey({ key: derOf(info), format: 'der', type: 'pkcs8' });
  } catch (cause) {
    throw invalid('the private key inside the PKCS#12 file could not be read', cause);
  }
  const certBags = p12.getBags({ bagType: forge.pki.oids.certBag })[forge.pki.oids.certBag!] ?? [];
  const certificates = certBags.map((b) => {
    try {
      const asn1 = b.cert ? forge.pki.certificateToAsn1(b.cert) : (b.asn1 as forge.asn1.Asn1);
      return new X509Certificate(derOf(asn1));
    } catch (cause) {
      throw invalid('a certificate inside the PKCS#12 file could not be read', cause);
    }
  });
  if (certificates.length === 0) throw invalid('the PKCS#12 file holds no certificate');
  return { key, certificates };
}

const derOf = (asn1: forge.asn1.Asn1) => Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');

/** RSA of 2048 bits or more, or EC on P-256 or P-384: the keys behind the algorithms UDAP names. */
function checkKeyType(key: KeyObject): 'rsa' | 'ec' {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') {
    if ((details.modulusLength ?? 0) < 2048)
      throw invalid(`the RSA key has ${details.modulusLength} bits; UDAP needs 2048 or more`);
    return 'rsa';
  }
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve !== 'prime256v1' && details.namedCurve !== 'secp384r1')
      throw invalid(`the EC key is on curve ${details.namedCurve}; UDAP signs with P-256 (ES256) or P-384 (ES384)`);
    return 'ec';
  }
  throw invalid(
    `a ${key.asymmetricKeyType} key is not supported: use an RSA (2048 bits or more) or EC P-256/P-384 key`,
  );
}

const ALGS_OF: Record<'rsa' | 'ec', readonly UdapAlg[]> = { rsa: ['RS256', 'RS384'], ec: ['ES256', 'ES384'] };

/**
 * One of our UDAP identities ready to sign: `sanUri` (the `iss` of our software statements) must be one of the
 * certificate's SAN URIs. `alg` defaults to RS256 for an RSA key (the algorithm every UDAP party supports) and to
 * ES256 for an EC key; ES256 needs a P-256 key and ES384 a P-384 key.
 * @see https://hl7.org/fhir/us/udap-security/general.html#signature-algorithm-identifiers
 * @see https://hl7.org/fhir/us/udap-security/registration.html#software-statement
 */
export function udapIdentity(
  material: Pick<CertificateMaterial, 'x5c' | 'privateKeyPem' | 'sanUris' | 'keyType'>,
  sanUri: string,
  alg?: UdapAlg,
): UdapIdentity {
  if (!material.sanUris.includes(sanUri))
    throw invalid(
      `${sanUri} is not a SAN URI of the certificate (it has ${material.sanUris.join(', ')}): sign as one of those`,
    );
  const chosen = alg ?? (material.keyType === 'rsa' ? 'RS256' : 'ES256');
  if (!ALGS_OF[material.keyType].includes(chosen))
    throw invalid(
      `${chosen} does not fit an ${material.keyType.toUpperCase()} key: use ${ALGS_OF[material.keyType].join(' or ')}`,
    );
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(material.privateKeyPem);
  } catch (cause) {
    throw invalid('the private key PEM could not be read', cause);
  }
  if (privateKey.asymmetricKeyType !== material.keyType)
    throw invalid(`the private key is ${privateKey.asymmetricKeyType}, not ${material.keyType} as recorded`);
  const curve = privateKey.asymmetricKeyDetails?.namedCurve;
  if ((chosen === 'ES256' && curve !== 'prime256v1') || (chosen === 'ES384' && curve !== 'secp384r1'))
    throw invalid(`${chosen} does not fit an EC key on ${curve}: use ${curve === 'secp384r1' ? 'ES384' : 'ES256'}`);
  return { sanUri, x5c: [...material.x5c], privateKey, alg: chosen };
}
