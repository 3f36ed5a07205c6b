import { X509Certificate } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import type { ClientMetadata, ServerMetadata } from 'openid-client';
import { describe, expect, it } from 'vitest';
import { signUdapClientAssertion, udapClientAuth } from './client-auth.js';
import { parseCertificateMaterial, udapIdentity } from './material.js';
import { TestCertificateAuthority } from './test-ca.js';

const SAN = 'https://dtr.example/udap/disclose';
const TOKEN = 'https://as.example/token';
const ca = TestCertificateAuthority.create('Client Auth Test Anchor');
const issued = ca.issue({ sanUris: [SAN] });
const identity = udapIdentity(parseCertificateMaterial({ pkcs12: issued.pkcs12('pw'), passphrase: 'pw' }), SAN);
const leafKey = new X509Certificate(issued.certificatePem).publicKey;
const b2b = {
  organizationId: 'https://dtr.example/Organization/1',
  organizationName: 'DTR Example',
  purposeOfUse: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
};

describe('signUdapClientAssertion', () => {
  it('signs iss = sub = client_id, aud = token endpoint, exp = iat + 300 s, with the x5c header', async () => {
    const now = new Date('2026-12-01T10:00:00Z');
    const assertion = await signUdapClientAssertion({ identity, clientId: 'client-1', tokenEndpoint: TOKEN, now });
    expect(decodeProtectedHeader(assertion)).toEqual({ alg: 'RS256', x5c: issued.x5c });
    const { payload } = await jwtVerify(assertion, leafKey, {
      currentDate: now,
      audience: TOKEN,
      issuer: 'client-1',
      subject: 'client-1',
    });
    expect(payload.iat).toBe(now.getTime() / 1000);
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(payload).not.toHaveProperty('extensions');
  });

  it('carries the hl7-b2b extension with the IG names when b2b is given', async () => {
    const assertion = await signUdapClientAssertion({
      identity,
      clientId: 'client-1',
      tokenEndpoint: TOKEN,
      b2b: { ...b2b, subjectName: 'Dr Who', subjectId: 'urn:oid:2.16.840.1.113883.4.6#1234567890' },
    });
    const { payload } = await jwtVerify(assertion, leafKey);
    expect(payload['extensions']).toEqual({
      'hl7-b2b': {
        version: '1',
        subject_name: 'Dr Who',
        subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890',
        organization_id: 'https://dtr.example/Organization/1',
        organization_name: 'DTR Example',
        purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'],
      },
    });
  });

  it('refuses a B2B extension without purpose of use or with an organization id that is not a URI', async () => {
    await expect(
      signUdapClientAssertion({ identity, clientId: 'c', tokenEndpoint: TOKEN, b2b: { ...b2b, purposeOfUse: [] } }),
    ).rejects.toThrow(/purpose of use/);
    await expect(
      signUdapClientAssertion({
        identity,
        clientId: 'c',
        tokenEndpoint: TOKEN,
        b2b: { ...b2b, organizationId: 'DTR Inc' },
      }),
    ).rejects.toThrow(/must be a URI/);
    await expect(signUdapClientAssertion({ identity, clientId: '', tokenEndpoint: TOKEN })).rejects.toThrow(
      /client_id/,
    );
  });
});

describe('udapClientAuth', () => {
  const as = { issuer: 'https://as.example', token_endpoint: TOKEN } as ServerMetadata;
  const client = { client_id: 'client-1' } as ClientMetadata;

  it('puts a fresh jwt-bearer assertion and udap=1 in each token request body, and no Authorization header', async () => {
    const auth = udapClientAuth({ identity, clientId: 'client-1', tokenEndpoint: TOKEN, b2b });
    const requests = [1, 2].map(() => ({
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }),
      headers: new Headers({ authorization: 'Basic eDp5' }),
    }));
    for (const { body, headers } of requests) await auth(as, client, body, headers);
    const jtis = [];
    for (const { body, headers } of requests) {
      expect(body.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      expect(body.get('udap')).toBe('1');
      expect(body.get('grant_type')).toBe('client_credentials');
      expect(headers.has('authorization')).toBe(false);
      const { payload } = await jwtVerify(body.get('client_assertion')!, leafKey, {
        audience: TOKEN,
        issuer: 'client-1',
      });
      expect(payload['extensions']).toHaveProperty('hl7-b2b');
      jtis.push(payload.jti);
    }
    expect(jtis[0]).not.toBe(jtis[1]);
  });
});

describe('udapClientAuth with openid-client against a token endpoint', () => {
  it('a client_credentials grant posts the assertion, udap=1 and the scope, and gets the token', async () => {
    let form: URLSearchParams | undefined;
    let authorization: string | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        authorization = req.headers.authorization;
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(
          JSON.stringify({ access_token: 'at-1', token_type: 'Bearer', expires_in: 300, scope: 'system/Patient.rs' }),
        );
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const tokenEndpoint = `${origin}/token`;
      const config = new oidc.Configuration(
        { issuer: origin, token_endpoint: tokenEndpoint },
        'client-1',
        {},
        udapClientAuth({ identity, clientId: 'client-1', tokenEndpoint, b2b }),
      );
      oidc.allowInsecureRequests(config);
      const tokens = await oidc.clientCredentialsGrant(config, { scope: 'system/Patient.rs' });
      expect(tokens.access_token).toBe('at-1');
      expect(authorization).toBeUndefined();
      expect(form?.get('grant_type')).toBe('client_credentials');
      expect(form?.get('scope')).toBe('system/Patient.rs');
      expect(form?.get('udap')).toBe('1');
      expect(form?.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      const { payload } = await jwtVerify(form!.get('client_assertion')!, leafKey, {
        audience: tokenEndpoint,
        issuer: 'client-1',
      });
      expect(payload['extensions']).toMatchObject({ 'hl7-b2b': { version: '1', purpose_of_use: b2b.purposeOfUse } });
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
