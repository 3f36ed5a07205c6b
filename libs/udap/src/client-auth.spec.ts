import { X509Certificate } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify } from 'jose';
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
