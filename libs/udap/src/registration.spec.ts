import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCertificateMaterial, udapIdentity } from './material.js';
import { registerUdapClient, signSoftwareStatement } from './registration.js';
import { TestCertificateAuthority } from './test-ca.js';
import type { SoftwareStatementInput } from './udap.types.js';

const SAN = 'https://dtr.example/udap/supplement';
const ca = TestCertificateAuthority.create('Registration Test Anchor');
const issued = ca.issue({ sanUris: [SAN] });
const identity = udapIdentity(parseCertificateMaterial({ pkcs12: issued.pkcs12('pw'), passphrase: 'pw' }), SAN);
const leafKey = new X509Certificate(issued.certificatePem).publicKey;
const REGISTER = 'https://as.example/register';

const codeInput: SoftwareStatementInput = {
  identity,
  registrationEndpoint: REGISTER,
  clientName: 'DTR (supplement)',
  contacts: ['mailto:ops@dtr.example'],
  grantType: 'authorization_code',
  redirectUris: ['https://dtr.example/launch/callback'],
  logoUri: 'https://dtr.example/logo.png',
  scope: 'launch openid fhirUser user/QuestionnaireResponse.cu',
};

async function claimsOf(statement: string) {
  const { payload, protectedHeader } = await jwtVerify(statement, leafKey, { audience: REGISTER, issuer: SAN });
  return { payload, protectedHeader };
}

describe('signSoftwareStatement', () => {
  it('signs an authorization_code statement with the leaf key: x5c header and the IG claims', async () => {
    const now = new Date('2026-12-01T10:00:00Z');
    const statement = await signSoftwareStatement({ ...codeInput, now });
    const header = decodeProtectedHeader(statement);
    expect(header).toEqual({ alg: 'RS256', x5c: issued.x5c });
    const { payload } = await jwtVerify(statement, leafKey, { currentDate: now });
    expect(payload).toMatchObject({
      iss: SAN,
      sub: SAN,
      aud: REGISTER,
      iat: now.getTime() / 1000,
      exp: now.getTime() / 1000 + 300,
      client_name: 'DTR (supplement)',
      contacts: ['mailto:ops@dtr.example'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['https://dtr.example/launch/callback'],
      logo_uri: 'https://dtr.example/logo.png',
      token_endpoint_auth_method: 'private_key_jwt',
      scope: 'launch openid fhirUser user/QuestionnaireResponse.cu',
    });
    expect(typeof payload.jti).toBe('string');
  });

  it('gives each statement its own jti', async () => {
    const jtis = await Promise.all(
      [1, 2, 3].map(async () => (await claimsOf(await signSoftwareStatement(codeInput))).payload.jti),
    );
    expect(new Set(jtis).size).toBe(3);
  });

  it('signs a client_credentials statement without redirect URIs nor response types, and a cancel with no grant type', async () => {
    const cc = (
      await claimsOf(
        await signSoftwareStatement({
          ...codeInput,
          grantType: 'client_credentials',
          redirectUris: undefined,
          logoUri: undefined,
          scope: 'system/Patient.rs',
        }),
      )
    ).payload;
    expect(cc['grant_types']).toEqual(['client_credentials']);
    expect(cc).not.toHaveProperty('redirect_uris');
    expect(cc).not.toHaveProperty('response_types');
    expect(cc).not.toHaveProperty('logo_uri');
    const cancel = (await claimsOf(await signSoftwareStatement({ ...codeInput, grantType: 'cancel' }))).payload;
    expect(cancel['grant_types']).toEqual([]);
    expect(cancel).not.toHaveProperty('redirect_uris');
    expect(cancel).not.toHaveProperty('response_types');
    const noRefresh = (await claimsOf(await signSoftwareStatement({ ...codeInput, refreshToken: false }))).payload;
    expect(noRefresh['grant_types']).toEqual(['authorization_code']);
  });

  it('refuses an authorization_code statement without redirect URI or logo, and other bad input', async () => {
    await expect(signSoftwareStatement({ ...codeInput, redirectUris: [] })).rejects.toThrow(
      /needs at least one redirect URI/,
    );
    await expect(signSoftwareStatement({ ...codeInput, logoUri: undefined })).rejects.toThrow(/needs a logo URI/);
    await expect(signSoftwareStatement({ ...codeInput, logoUri: 'https://dtr.example/logo.svg' })).rejects.toThrow(
      /PNG, JPG or GIF/,
    );
    await expect(signSoftwareStatement({ ...codeInput, redirectUris: ['http://dtr.example/cb'] })).rejects.toThrow(
      /must use https/,
    );
    await expect(signSoftwareStatement({ ...codeInput, contacts: ['https://dtr.example/contact'] })).rejects.toThrow(
      /mailto/,
    );
    await expect(signSoftwareStatement({ ...codeInput, grantType: 'client_credentials' })).rejects.toThrow(
      /client_credentials statement has none/,
    );
  });
});

type Handler = (body: Record<string, unknown>, res: ServerResponse) => void;

describe('registerUdapClient against a registration endpoint', () => {
  let server: Server;
  let endpoint: string;
  let handler: Handler = () => undefined;
  let received: Record<string, unknown> | undefined;

  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        received['_contentType'] = req.headers['content-type'];
        handler(received, res);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/register`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const input = () => ({ ...codeInput, registrationEndpoint: endpoint });

  it('posts the signed statement with certifications and udap "1", and reads the client_id of a 201', async () => {
    handler = (body, res) =>
      json(res, 201, {
        client_id: 'abc-123',
        software_statement: body['software_statement'],
        grant_types: ['authorization_code'],
        scope: 'openid',
      });
    const registration = await registerUdapClient({ registrationEndpoint: endpoint }, input(), { fetch });
    expect(registration).toEqual({
      clientId: 'abc-123',
      granted: { client_id: 'abc-123', grant_types: ['authorization_code'], scope: 'openid' },
      status: 'registered',
    });
    expect(received).toMatchObject({ certifications: [], udap: '1', _contentType: 'application/json' });
    const { payload } = await jwtVerify(received!['software_statement'] as string, leafKey, { audience: endpoint });
    expect(payload.iss).toBe(SAN);
  });

  it('reads a cancellation: the answer with an empty grant_types', async () => {
    handler = (_body, res) => json(res, 200, { client_id: 'abc-123', grant_types: [] });
    const registration = await registerUdapClient(
      { registrationEndpoint: endpoint },
      { ...input(), grantType: 'cancel' },
      { fetch },
    );
    expect(registration.status).toBe('cancelled');
    expect(registration.clientId).toBe('abc-123');
  });

  it('says so when a cancellation is answered without confirmation', async () => {
    handler = (_body, res) => json(res, 200, { client_id: 'abc-123', grant_types: ['authorization_code'] });
    await expect(
      registerUdapClient({ registrationEndpoint: endpoint }, { ...input(), grantType: 'cancel' }, { fetch }),
    ).rejects.toThrow(/without confirming it/);
  });

  it('quotes an OAuth error answer, escaped and cut, with the status in details', async () => {
    handler = (_body, res) =>
      json(res, 400, {
        error: 'invalid_software_statement',
        error_description: `certificate not trusted\n<script>${'x'.repeat(1000)}`,
      });
    const failure = await registerUdapClient({ registrationEndpoint: endpoint }, input(), { fetch }).catch(
      (e: unknown) => e,
    );
    expect(failure).toMatchObject({
      code: 'UPSTREAM_ERROR',
      details: { status: 400, error: 'invalid_software_statement' },
    });
    const message = (failure as Error).message;
    expect(message).toContain('"invalid_software_statement" "certificate not trusted\\n\\u003cscript\\u003exxx');
    expect(message).not.toContain('\n');
    expect(message).not.toContain('<script>');
    expect(message.length).toBeLessThan(500);
  });

  it('fails clearly on an answer without client_id and on a server error without JSON', async () => {
    handler = (_body, res) => json(res, 201, { grant_types: ['authorization_code'] });
    await expect(registerUdapClient({ registrationEndpoint: endpoint }, input(), { fetch })).rejects.toThrow(
      /without a client_id/,
    );
    handler = (_body, res) => {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html>bad gateway</html>');
    };
    await expect(registerUdapClient({ registrationEndpoint: endpoint }, input(), { fetch })).rejects.toThrow(
      /answered the registration with HTTP 502/,
    );
  });
});
