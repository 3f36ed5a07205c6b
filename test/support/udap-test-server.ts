import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { IssuedCertificate } from '@dtr/udap';
import { decodeJwt, decodeProtectedHeader, importX509, jwtVerify, SignJWT } from 'jose';

type Json = Record<string, unknown>;

/** What a test UDAP authorization server saw and offers. */
export interface UdapTestServer {
  /** The FHIR base of a variant: `{origin}/{variant}/fhir`. */
  base(variant: string): string;
  /** Serves a variant's metadata signed by `signer` (tampered after signing when asked), with these profiles. */
  serveMetadata(variant: string, signer: IssuedCertificate, tamper?: boolean, profiles?: string[]): Promise<void>;
  /** Verified software statements, in order. */
  statements: Json[];
  /** Verified client assertions of token requests, with the form's `udap` and `grant_type`. */
  assertions: Array<{ header: Json; claims: Json; udap: string | null; grant: string | null }>;
  close(): Promise<void>;
}

/**
 * A UDAP authorization server on 127.0.0.1 for int tests (one per path prefix, `/{variant}/fhir`): signed metadata,
 * a SMART configuration, dynamic registration that verifies each software statement with its x5c and keeps the client
 * id of a SAN URI across modifications, cancellation by empty grant_types, and a token endpoint that accepts only a
 * UDAP client assertion of a registered client, verified with its registered certificate. The sandbox's own UDAP
 * server is the peer of test/udap.e2e-spec.ts.
 */
export async function startUdapTestServer(): Promise<UdapTestServer> {
  let origin = '';
  const metadata = new Map<string, Json>();
  const clients = new Map<string, { clientId: string; grantTypes: string[]; x5c: string }>();
  const statements: Json[] = [];
  const assertions: UdapTestServer['assertions'] = [];
  const base = (variant: string) => `${origin}/${variant}/fhir`;

  async function serveMetadata(
    variant: string,
    signer: IssuedCertificate,
    tamper = false,
    profiles = ['udap_dcr', 'udap_authn', 'udap_authz', 'udap_to'],
  ): Promise<void> {
    const now = Math.floor(Date.now() / 1000);
    const endpoints = {
      authorization_endpoint: `${base(variant)}/authorize`,
      token_endpoint: `${base(variant)}/token`,
      registration_endpoint: `${base(variant)}/register`,
    };
    let signed = await new SignJWT({
      iss: base(variant),
      sub: base(variant),
      iat: now,
      exp: now + 3600,
      jti: variant,
      ...endpoints,
    })
      .setProtectedHeader({ alg: 'RS256', x5c: signer.x5c })
      .sign(createPrivateKey(signer.privateKeyPem));
    if (tamper) {
      const [h, p, s] = signed.split('.');
      const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Json;
      claims['token_endpoint'] = `${base(variant)}/elsewhere`;
      signed = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
    }
    metadata.set(variant, {
      udap_versions_supported: ['1'],
      udap_profiles_supported: profiles,
      udap_authorization_extensions_supported: ['hl7-b2b'],
      udap_authorization_extensions_required: [],
      udap_certifications_supported: [],
      grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS256'],
      registration_endpoint_jwt_signing_alg_values_supported: ['RS256'],
      ...endpoints,
      signed_metadata: signed,
    });
  }

  async function handle(path: string, body: string): Promise<{ status: number; json: Json }> {
    if (path.endsWith('/.well-known/smart-configuration')) {
      const fhir = `${origin}${path.replace('/.well-known/smart-configuration', '')}`;
      return {
        status: 200,
        json: {
          authorization_endpoint: `${fhir}/authorize`,
          token_endpoint: `${fhir}/token`,
          code_challenge_methods_supported: ['S256'],
          capabilities: ['launch-ehr', 'launch-standalone', 'client-confidential-asymmetric'],
        },
      };
    }
    if (path.endsWith('/.well-known/udap')) {
      const doc = metadata.get(path.split('/')[1] ?? '');
      return doc ? { status: 200, json: doc } : { status: 404, json: {} };
    }
    if (path.endsWith('/register')) {
      const { software_statement: statement } = JSON.parse(body) as { software_statement: string };
      const header = decodeProtectedHeader(statement);
      const leaf = (header.x5c as string[])[0]!;
      const pem = new X509Certificate(Buffer.from(leaf, 'base64')).toString();
      const { payload } = await jwtVerify(statement, await importX509(pem, 'RS256'));
      statements.push(payload as Json);
      const iss = payload.iss!;
      const grantTypes = payload['grant_types'] as string[];
      const known = clients.get(iss);
      if (grantTypes.length === 0) {
        clients.delete(iss);
        return { status: 200, json: { client_id: known?.clientId ?? 'unknown', grant_types: [] } };
      }
      const clientId = known?.clientId ?? `client-${randomBytes(6).toString('hex')}`;
      clients.set(iss, { clientId, grantTypes, x5c: leaf });
      return {
        status: known ? 200 : 201,
        json: { client_id: clientId, grant_types: grantTypes, scope: payload['scope'], software_statement: statement },
      };
    }
    if (path.endsWith('/token')) {
      const form = new URLSearchParams(body);
      const assertion = form.get('client_assertion') ?? '';
      const header = decodeProtectedHeader(assertion) as Json;
      const claims = decodeJwt(assertion) as Json;
      const client = [...clients.values()].find((c) => c.clientId === claims['iss']);
      if (!client) return { status: 401, json: { error: 'invalid_client', error_description: 'unknown client' } };
      const pem = new X509Certificate(Buffer.from(client.x5c, 'base64')).toString();
      await jwtVerify(assertion, await importX509(pem, 'RS256'));
      assertions.push({ header, claims, udap: form.get('udap'), grant: form.get('grant_type') });
      return {
        status: 200,
        json: {
          access_token: `at-${randomBytes(8).toString('hex')}`,
          token_type: 'Bearer',
          expires_in: 300,
          // An authorization_code grant (a launch) names its patient, as SMART servers do.
          ...(form.get('grant_type') === 'authorization_code' ? { patient: 'udap-patient' } : {}),
        },
      };
    }
    return { status: 404, json: {} };
  }

  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      handle(path, body).then(
        ({ status, json }) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(json)),
        () => res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_request"}'),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    serveMetadata,
    statements,
    assertions,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
