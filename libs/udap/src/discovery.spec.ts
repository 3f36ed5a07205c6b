import { createPrivateKey } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverUdapServer } from './discovery.js';
import { TestCertificateAuthority, type IssuedCertificate } from './test-ca.js';

/**
 * A UDAP server on 127.0.0.1 serving one metadata document per path prefix (`/{variant}/.well-known/udap`), each
 * variant broken in one way, signed by certificates of the community's test CA (or another CA).
 */
describe('discoverUdapServer against a metadata endpoint', () => {
  const community = TestCertificateAuthority.create('Discovery Test Community');
  const stranger = TestCertificateAuthority.create('Another Community');
  const documents = new Map<string, { status: number; body?: unknown }>();
  const requested: string[] = [];
  let server: Server;
  let origin: string;

  const base = (variant: string) => `${origin}/${variant}`;

  function plain(variant: string) {
    return {
      udap_versions_supported: ['1'],
      udap_profiles_supported: ['udap_dcr', 'udap_authn', 'udap_authz'],
      udap_authorization_extensions_supported: ['hl7-b2b'],
      udap_authorization_extensions_required: ['hl7-b2b'],
      udap_certifications_supported: [],
      grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
      scopes_supported: ['openid', 'system/*.rs'],
      authorization_endpoint: `${base(variant)}/authorize`,
      token_endpoint: `${base(variant)}/token`,
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS256', 'ES256'],
      registration_endpoint: `${base(variant)}/register`,
      registration_endpoint_jwt_signing_alg_values_supported: ['RS256'],
    };
  }

  async function sign(cert: IssuedCertificate, claims: Record<string, unknown>, alg = 'RS256') {
    return new SignJWT(claims).setProtectedHeader({ alg, x5c: cert.x5c }).sign(createPrivateKey(cert.privateKeyPem));
  }

  /** Serves `variant` with the given certificate and claim changes (iss = sub = its base unless overridden). */
  async function serve(
    variant: string,
    options: {
      cert?: IssuedCertificate;
      claims?: Record<string, unknown>;
      unsigned?: Record<string, unknown>;
      alg?: string;
      tamper?: boolean;
    } = {},
  ) {
    const cert = options.cert ?? community.issue({ sanUris: [base(variant)] });
    const now = Math.floor(Date.now() / 1000);
    const unsigned = { ...plain(variant), ...options.unsigned };
    let signed = await sign(
      cert,
      {
        iss: base(variant),
        sub: base(variant),
        iat: now,
        exp: now + 3600,
        jti: `jti-${variant}`,
        authorization_endpoint: `${base(variant)}/authorize`,
        token_endpoint: `${base(variant)}/token`,
        registration_endpoint: `${base(variant)}/register`,
        ...options.claims,
      },
      options.alg,
    );
    if (options.tamper) {
      const [h, p, s] = signed.split('.');
      const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
      claims['token_endpoint'] = 'https://attacker.example/token';
      signed = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
    }
    documents.set(variant, { status: 200, body: { ...unsigned, signed_metadata: signed } });
  }

  beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      requested.push(`${url.pathname}${url.search}`);
      const variant = url.pathname.split('/')[1] ?? '';
      const community = url.searchParams.get('community');
      const doc =
        community === 'urn:unknown'
          ? { status: 204 }
          : url.pathname.endsWith('/.well-known/udap')
            ? documents.get(variant)
            : undefined;
      if (!doc) {
        res.writeHead(404).end();
        return;
      }
      if (doc.body === undefined) {
        res.writeHead(doc.status).end();
        return;
      }
      res.writeHead(doc.status, { 'content-type': 'application/json' }).end(JSON.stringify(doc.body));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await serve('good');
    await serve('tampered', { tamper: true });
    await serve('stranger', { cert: stranger.issue({ sanUris: [base('stranger')] }) });
    await serve('expired-cert', {
      cert: community.issue({
        sanUris: [base('expired-cert')],
        notBefore: new Date(Date.now() - 3 * 86400_000),
        notAfter: new Date(Date.now() - 86400_000),
      }),
    });
    await serve('other-san', { cert: community.issue({ sanUris: ['https://other.example/fhir'] }) });
    await serve('other-iss', { claims: { iss: 'https://other.example/fhir', sub: 'https://other.example/fhir' } });
    await serve('disagree', { unsigned: { token_endpoint: 'https://elsewhere.example/token' } });
    await serve('expired-jwt', { claims: { iat: 1_700_000_000, exp: 1_700_003_600 } });
    await serve('rs384', { alg: 'RS384' });
    await serve('no-iat', { claims: { iat: undefined } });
    const { udap_versions_supported: _v, ...withoutVersions } = plain('no-versions');
    documents.set('no-versions', { status: 200, body: { ...withoutVersions, signed_metadata: 'x.y.z' } });
    documents.set('huge', { status: 200, body: { ...plain('huge'), signed_metadata: 'x'.repeat(70 * 1024) } });
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const discover = (variant: string, extra: { community?: string } = {}) =>
    discoverUdapServer(base(variant), { fetch, anchorsPem: [community.anchorPem], ...extra });
  const reasonOf = (variant: string) =>
    discover(variant).then(
      () => 'accepted',
      (error: unknown) => (error as { details?: { udap?: string } }).details?.udap ?? String(error),
    );

  it('accepts signed metadata chaining to a trusted anchor and takes the endpoints from it', async () => {
    const server = await discover('good');
    expect(server).toMatchObject({
      baseUrl: base('good'),
      authorizationEndpoint: `${base('good')}/authorize`,
      tokenEndpoint: `${base('good')}/token`,
      registrationEndpoint: `${base('good')}/register`,
      profiles: ['udap_dcr', 'udap_authn', 'udap_authz'],
      tokenSigningAlgs: ['RS256', 'ES256'],
      authorizationExtensionsRequired: ['hl7-b2b'],
    });
    expect(server.metadata.udap_versions_supported).toEqual(['1']);
    expect(await discoverUdapServer(`${base('good')}/`, { fetch, anchorsPem: [community.anchorPem] })).toMatchObject({
      tokenEndpoint: `${base('good')}/token`,
    });
  });

  it('refuses altered metadata (bad-signature) and metadata of another community (untrusted-anchor), saying what to do', async () => {
    expect(await reasonOf('tampered')).toBe('bad-signature');
    expect(await reasonOf('stranger')).toBe('untrusted-anchor');
    await expect(discover('stranger')).rejects.toThrow(/add the community's anchor with `dtr udap anchors add`/);
  });

  it('refuses an expired server certificate and expired signed metadata', async () => {
    expect(await reasonOf('expired-cert')).toBe('expired-certificate');
    await expect(discover('expired-cert')).rejects.toThrow(/must renew its certificate/);
    expect(await reasonOf('expired-jwt')).toBe('bad-claims');
    await expect(discover('expired-jwt')).rejects.toThrow(/expired at 2023-11-14/);
  });

  it('refuses a certificate whose SAN URI is not the base URL, and an iss that is not the base URL (san-mismatch)', async () => {
    expect(await reasonOf('other-san')).toBe('san-mismatch');
    expect(await reasonOf('other-iss')).toBe('san-mismatch');
  });

  it('refuses plain endpoints that disagree with the signed ones, another algorithm than RS256 and a missing iat', async () => {
    expect(await reasonOf('disagree')).toBe('bad-claims');
    await expect(discover('disagree')).rejects.toThrow(/token_endpoint .* differs between its signed metadata/);
    expect(await reasonOf('rs384')).toBe('unsupported-alg');
    expect(await reasonOf('no-iat')).toBe('bad-claims');
  });

  it('refuses metadata without udap_versions_supported "1", and says when the server has no UDAP', async () => {
    await expect(discover('no-versions')).rejects.toThrow(/udap_versions_supported/);
    await expect(discover('nothing-here')).rejects.toThrow(/does not support UDAP \(404/);
    await expect(discover('huge')).rejects.toThrow(/more than the 64 KiB accepted/);
  });

  it('asks for a community and says when the server does not know it', async () => {
    requested.length = 0;
    await discover('good', { community: 'urn:oid:1.2.3' });
    expect(requested).toEqual(['/good/.well-known/udap?community=urn%3Aoid%3A1.2.3']);
    await expect(discover('good', { community: 'urn:unknown' })).rejects.toThrow(
      /does not support UDAP for the community "urn:unknown" \(HTTP 204/,
    );
  });
});
