import type { KeyObject } from 'node:crypto';

/** Signing algorithms UDAP allows; RS256 every party must support. */
export type UdapAlg = 'RS256' | 'ES256' | 'RS384' | 'ES384';

/** One of our UDAP identities, in memory only: the certificate chain and its private key. */
export interface UdapIdentity {
  /** The SAN URI this identity signs as (`iss`/`sub` of software statements); one of the leaf's SAN URIs. */
  sanUri: string;
  /** The leaf then its intermediates, base64 DER, as the `x5c` header carries them. */
  x5c: string[];
  privateKey: KeyObject;
  alg: UdapAlg;
}

/** Certificate material an operator hands us (PEM or PKCS#12), parsed and checked. */
export interface CertificateMaterial {
  /** Leaf first, base64 DER. */
  x5c: string[];
  /** The private key, PKCS#8 PEM (to be sealed at rest by the caller). */
  privateKeyPem: string;
  sanUris: string[];
  subject: string;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  keyType: 'rsa' | 'ec';
}

/** `GET {base}/.well-known/udap`, as the server answered it. */
export interface UdapServerMetadata {
  udap_versions_supported: string[];
  udap_profiles_supported: string[];
  udap_authorization_extensions_supported: string[];
  udap_authorization_extensions_required?: string[];
  udap_certifications_supported: string[];
  udap_certifications_required?: string[];
  grant_types_supported: string[];
  scopes_supported?: string[];
  authorization_endpoint?: string;
  token_endpoint: string;
  token_endpoint_auth_methods_supported: string[];
  token_endpoint_auth_signing_alg_values_supported: string[];
  registration_endpoint: string;
  registration_endpoint_jwt_signing_alg_values_supported: string[];
  signed_metadata: string;
}

/** A UDAP server whose signed metadata checked out; endpoints come from the signed metadata. */
export interface DiscoveredUdapServer {
  baseUrl: string;
  authorizationEndpoint?: string;
  tokenEndpoint: string;
  registrationEndpoint: string;
  /** `udap_dcr`, `udap_authn`, `udap_authz`, `udap_to`, ... */
  profiles: string[];
  tokenSigningAlgs: string[];
  authorizationExtensionsRequired: string[];
  metadata: UdapServerMetadata;
}

export type UdapGrantType = 'authorization_code' | 'client_credentials';

export interface SoftwareStatementInput {
  identity: UdapIdentity;
  registrationEndpoint: string;
  clientName: string;
  contacts: string[];
  /** The one grant type this registration is for; `cancel` sends an empty `grant_types` (cancels the client). */
  grantType: UdapGrantType | 'cancel';
  /** Required with authorization_code. */
  redirectUris?: string[];
  /** Required with authorization_code. */
  logoUri?: string;
  /** With authorization_code: also ask for `refresh_token` (the IG allows it only beside authorization_code). Default true. */
  refreshToken?: boolean;
  scope: string;
  now?: Date;
}

export interface UdapRegistration {
  clientId: string;
  /** The metadata the server granted (its answer, minus the echoed software statement). */
  granted: Record<string, unknown>;
  /** `cancelled` after a `cancel` statement. */
  status: 'registered' | 'cancelled';
}

/** The B2B authorization extension object (`hl7-b2b`) a client_credentials token request carries. */
export interface B2bExtension {
  /** A URI identifying the requesting organization (`organization_id`). */
  organizationId: string;
  organizationName?: string;
  /** One or more codes, preferably `urn:oid:2.16.840.1.113883.5.8#TREAT` style URIs (`purpose_of_use`). */
  purposeOfUse: string[];
  /** The human or non-human requestor's name (`subject_name`), required by the IG when known. */
  subjectName?: string;
  /** The human requestor's identifier, e.g. an NPI as `urn:oid:2.16.840.1.113883.4.6#1234567890` (`subject_id`). */
  subjectId?: string;
  /** The human requestor's role code, e.g. a NUCC taxonomy code URI (`subject_role`). */
  subjectRole?: string;
  /** Policy URIs consistent with the purpose of use (`consent_policy`). */
  consentPolicy?: string[];
  /** Absolute URLs of Consent or DocumentReference resources (`consent_reference`); only with consentPolicy. */
  consentReference?: string[];
}

export interface ClientAssertionInput {
  identity: UdapIdentity;
  clientId: string;
  tokenEndpoint: string;
  /** With client_credentials: the `hl7-b2b` extension. */
  b2b?: B2bExtension;
  now?: Date;
}
