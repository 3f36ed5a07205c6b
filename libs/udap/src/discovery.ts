import { X509Certificate } from 'node:crypto';
import { DtrError } from '@dtr/kernel';
import { compactVerify, decodeProtectedHeader, type ProtectedHeaderParameters } from 'jose';
import { z } from 'zod';
import { sanUrisOf, udapRefusal, verifyChain } from './certificates.js';
import { placeOf, quotePeer, readJson, send } from './udap-http.js';
import type { DiscoveredUdapServer, UdapServerMetadata } from './udap.types.js';

const strings = z.array(z.string());

/**
 * The unsigned UDAP metadata: the IG's required elements, with their JSON types.
 * @see https://hl7.org/fhir/us/udap-security/discovery.html#required-udap-metadata
 */
const METADATA = z.looseObject({
  udap_versions_supported: strings.refine((v) => v.includes('1'), 'does not include "1"'),
  udap_profiles_supported: strings,
  udap_authorization_extensions_supported: strings,
  udap_authorization_extensions_required: strings.optional(),
  udap_certifications_supported: strings,
  udap_certifications_required: strings.optional(),
  grant_types_supported: strings.min(1),
  scopes_supported: strings.optional(),
  authorization_endpoint: z.string().optional(),
  token_endpoint: z.string(),
  token_endpoint_auth_methods_supported: strings,
  token_endpoint_auth_signing_alg_values_supported: strings,
  registration_endpoint: z.string(),
  registration_endpoint_jwt_signing_alg_values_supported: strings,
  signed_metadata: z.string().min(1),
});

/** The IG allows only RS256 for signed server metadata (unlike software statements and authentication tokens). */
const METADATA_ALGS = ['RS256'];
const ONE_YEAR_SECONDS = 366 * 24 * 3600;

/**
 * Discovers a UDAP server from its FHIR base URL: `GET {baseUrl}/.well-known/udap` (with `?community=` when given),
 * read within 64 KiB, the required metadata checked, then its `signed_metadata` validated as UDAP Server Metadata §3
 * and the IG say: an RS256 JWS whose `x5c` chains to one of `anchorsPem`, signed by the leaf's key, `iss` = `sub` =
 * `baseUrl` and one of the leaf's SAN URIs, `exp` not passed (and at most a year after `iat`), `jti` present. The
 * endpoints are taken from the signed metadata and the server is refused when its plain JSON says otherwise.
 * Failures of the signed metadata are UDAP refusals (`details.udap`) whose message says what to do.
 * @see https://hl7.org/fhir/us/udap-security/discovery.html#signed-metadata-elements
 * @see https://www.udap.org/udap-server-metadata-stu1.html#section-3
 */
export async function discoverUdapServer(
  baseUrl: string,
  options: { fetch: typeof fetch; anchorsPem: string[]; community?: string; now?: Date },
): Promise<DiscoveredUdapServer> {
  const url = wellKnownUrl(baseUrl, options.community);
  const response = await send(options.fetch, url, { headers: { accept: 'application/json' } });
  const place = placeOf(url);
  const community = options.community;
  if (community !== undefined && (response.status === 204 || response.status === 404)) {
    await response.body?.cancel().catch(() => undefined);
    throw new DtrError(
      'UPSTREAM_ERROR',
      `${baseUrl} does not support UDAP for the community ${quotePeer(community)} (HTTP ${response.status} at ${place}): check the community URI, or ask its operator which communities it serves`,
      { details: { status: response.status } },
    );
  }
  if (response.status === 404) {
    await response.body?.cancel().catch(() => undefined);
    throw new DtrError('UPSTREAM_ERROR', `${baseUrl} does not support UDAP (404 at ${place}): register it manually`, {
      details: { status: 404 },
    });
  }
  if (response.status !== 200) {
    await response.body?.cancel().catch(() => undefined);
    throw new DtrError('UPSTREAM_ERROR', `${place} answered the UDAP metadata request with HTTP ${response.status}`, {
      details: { status: response.status },
    });
  }
  const parsed = METADATA.safeParse(await readJson(response, url));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new DtrError(
      'UPSTREAM_ERROR',
      `the UDAP metadata at ${place} is not usable: ${issue?.path.join('.') || 'the document'} ${issue?.message ?? ''}`.trim(),
    );
  }
  const metadata = parsed.data as UdapServerMetadata;
  if (metadata.grant_types_supported.includes('authorization_code') && !metadata.authorization_endpoint)
    throw new DtrError(
      'UPSTREAM_ERROR',
      `the UDAP metadata at ${place} supports authorization_code without an authorization_endpoint`,
    );
  const signed = await verifySignedMetadata(
    metadata.signed_metadata,
    baseUrl.replace(/\/+$/, ''),
    options.anchorsPem,
    options.now ?? new Date(),
  );
  const endpoint = (name: 'authorization_endpoint' | 'token_endpoint' | 'registration_endpoint') => {
    const value = signed[name];
    if (value === undefined) {
      if (name === 'authorization_endpoint' && metadata.authorization_endpoint === undefined) return undefined;
      throw udapRefusal('bad-claims', `the signed UDAP metadata of ${baseUrl} has no ${name}`);
    }
    if (typeof value !== 'string' || !isEndpointUrl(value))
      throw udapRefusal('bad-claims', `the signed ${name} of ${baseUrl} is not an absolute https URL`);
    if (metadata[name] !== value)
      throw udapRefusal(
        'bad-claims',
        `the ${name} of ${baseUrl} differs between its signed metadata (${value}) and its plain metadata (${quotePeer(metadata[name])}): the metadata may have been altered; ask the server's operator`,
      );
    return value;
  };
  const authorizationEndpoint = endpoint('authorization_endpoint');
  return {
    baseUrl,
    ...(authorizationEndpoint ? { authorizationEndpoint } : {}),
    tokenEndpoint: endpoint('token_endpoint')!,
    registrationEndpoint: endpoint('registration_endpoint')!,
    profiles: metadata.udap_profiles_supported,
    tokenSigningAlgs: metadata.token_endpoint_auth_signing_alg_values_supported,
    authorizationExtensionsRequired: metadata.udap_authorization_extensions_required ?? [],
    metadata,
  };
}

function wellKnownUrl(baseUrl: string, community?: string): string {
  let base: URL;
  try {
    base = new URL(baseUrl);
  } catch {
    throw new DtrError('INVALID_INPUT', `the FHIR base URL ${quotePeer(baseUrl)} is not an absolute URL`);
  }
  if (!isEndpointUrl(base.href) || base.search || base.hash)
    throw new DtrError('INVALID_INPUT', `the FHIR base URL ${baseUrl} must be an https URL without query or fragment`);
  const url = `${baseUrl.replace(/\/+$/, '')}/.well-known/udap`;
  return community === undefined ? url : `${url}?community=${encodeURIComponent(community)}`;
}

/** https, or http on loopback only (the sandbox and tests). */
function isEndpointUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (
      url.protocol === 'https:' ||
      (url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname))
    );
  } catch {
    return false;
  }
}

/**
 * The claims of a server's `signed_metadata` once its chain, signature and claims check out (see discoverUdapServer);
 * `base` is the FHIR base URL without trailing slash. Throws a UDAP refusal naming what failed.
 */
async function verifySignedMetadata(
  jws: string,
  base: string,
  anchorsPem: readonly string[],
  now: Date,
): Promise<Record<string, unknown>> {
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(jws);
  } catch {
    throw udapRefusal('bad-signature', `the signed_metadata of ${base} is not a JWS: ask the server's operator`);
  }
  if (typeof header.alg !== 'string' || !METADATA_ALGS.includes(header.alg))
    throw udapRefusal(
      'unsupported-alg',
      `the signed_metadata of ${base} is signed with ${quotePeer(header.alg)}; the UDAP Security IG requires RS256 for server metadata: ask the server's operator`,
    );
  const leaf = trustedLeaf(header.x5c, base, anchorsPem, now);
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(jws, leaf.publicKey, { algorithms: METADATA_ALGS }));
  } catch (cause) {
    throw new DtrError(
      'UPSTREAM_ERROR',
      `the signed_metadata of ${base} does not verify with the key of its own certificate: the metadata may have been altered; ask the server's operator (udap: bad-signature)`,
      { cause, details: { udap: 'bad-signature' } },
    );
  }
  return checkClaims(payload, base, leaf, now);
}

function trustedLeaf(x5c: unknown, base: string, anchorsPem: readonly string[], now: Date): X509Certificate {
  try {
    return verifyChain(x5c, anchorsPem, now).leaf;
  } catch (error) {
    if (!DtrError.is(error)) throw error;
    const reason = error.details['udap'];
    const advice: Record<string, string> = {
      'untrusted-anchor': `if ${base} belongs to a community you trust, add the community's anchor with \`dtr udap anchors add\``,
      'expired-certificate': `the server's operator must renew its certificate`,
      'not-yet-valid-certificate': `check this machine's clock, or wait until the certificate is valid`,
      'bad-claims': `the server's x5c header is unusable: ask its operator`,
    };
    throw new DtrError(
      error.code,
      `${base} signed its UDAP metadata with a certificate that is refused: ${error.message.replace(/ \(udap: [a-z-]+\)$/, '')}; ${advice[String(reason)] ?? 'ask the server operator'} (udap: ${String(reason)})`,
      { cause: error, details: error.details },
    );
  }
}

/**
 * The signed metadata's claims: `iss` = the FHIR base URL and one of the leaf's SAN URIs (`san-mismatch` otherwise),
 * `sub` = `iss`, `exp` in the future and at most a year after `iat`, `jti` present (`bad-claims` otherwise).
 * @see https://hl7.org/fhir/us/udap-security/discovery.html#signed-metadata-elements
 */
function checkClaims(payload: Uint8Array, base: string, leaf: X509Certificate, now: Date): Record<string, unknown> {
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    claims = undefined;
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims))
    throw udapRefusal('bad-claims', `the signed_metadata of ${base} does not hold a JSON claims set`);
  const c = claims as Record<string, unknown>;
  const sanUris = sanUrisOf(leaf);
  if (c['iss'] !== base && c['iss'] !== `${base}/`)
    throw udapRefusal(
      'san-mismatch',
      `the signed metadata found at ${base} was issued by ${quotePeer(c['iss'])}: use the FHIR base URL the server signs as, or ask its operator`,
    );
  if (!sanUris.includes(c['iss']))
    throw udapRefusal(
      'san-mismatch',
      `the certificate that signed the metadata of ${base} names ${sanUris.join(', ') || 'no SAN URI'}, not ${c['iss']}: the server's operator must sign with the certificate issued for this base URL`,
    );
  if (c['sub'] !== c['iss'])
    throw udapRefusal('bad-claims', `the signed metadata of ${base} has a sub that is not its iss`);
  const nowSeconds = Math.floor(now.getTime() / 1000);
  if (typeof c['iat'] !== 'number') throw udapRefusal('bad-claims', `the signed metadata of ${base} has no iat`);
  if (typeof c['exp'] !== 'number') throw udapRefusal('bad-claims', `the signed metadata of ${base} has no exp`);
  if (c['exp'] <= nowSeconds)
    throw udapRefusal(
      'bad-claims',
      `the signed metadata of ${base} expired at ${new Date(c['exp'] * 1000).toISOString()}: the server must sign it anew; ask its operator`,
    );
  if (c['exp'] - c['iat'] > ONE_YEAR_SECONDS)
    throw udapRefusal('bad-claims', `the signed metadata of ${base} is valid for more than the year the IG allows`);
  if (typeof c['jti'] !== 'string' || c['jti'] === '')
    throw udapRefusal('bad-claims', `the signed metadata of ${base} has no jti`);
  return c;
}
