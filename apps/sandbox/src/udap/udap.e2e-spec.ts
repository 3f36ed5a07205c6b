import { X509Certificate } from 'node:crypto';
import { verifyChain } from '@dtr/udap';
import { SignJWT, compactVerify, decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadSandboxOptions } from '../sandbox.config.js';
import { type RunningSandbox, startSandbox } from '../sandbox.js';
import { SANDBOX_COMMUNITY_URI } from './index.js';
import { ASSERTION_TYPE, HL7_B2B, b2bStatement, register, signUdapJwt, tokenRequest } from './udap-test-client.js';

let sandbox: RunningSandbox;

beforeAll(async () => {
  const options = loadSandboxOptions(
    { SANDBOX_EHR_PORT: '0', SANDBOX_PAYER_PORT: '0', SANDBOX_PATIENTS: '2' } as NodeJS.ProcessEnv,
    [],
  );
  sandbox = await startSandbox(options);
});
afterAll(async () => {
  await sandbox?.close();
});

const metadataOf = async (base: string, query = '') => {
  const response = await fetch(`${base}/.well-known/udap${query}`);
  return {
    status: response.status,
    body: response.status === 200 ? ((await response.json()) as Record<string, unknown>) : {},
  };
};

/** What a strict client does with signed metadata: the reason it refuses it, or undefined. */
async function refusalOf(base: string, signed: string): Promise<string | undefined> {
  try {
    const { leaf, sanUris } = verifyChain(decodeProtectedHeader(signed).x5c, [sandbox.udap.anchorPem], new Date());
    await compactVerify(signed, leaf.publicKey, { algorithms: ['RS256'] });
    if (!sanUris.includes(base)) return 'san-mismatch';
    return undefined;
  } catch (error) {
    const reason = (error as { details?: { udap?: string } }).details?.udap;
    return reason ?? 'bad-signature';
  }
}

describe('sandbox UDAP discovery', () => {
  afterEach(() => {
    sandbox.ehr.peer.faults.clear();
    sandbox.payer.peer.faults.clear();
  });

  it('serves the IG metadata at the EHR and at each payer, signed with a certificate for its FHIR base', async () => {
    for (const [base, code] of [
      [sandbox.ehr.fhirBase, true],
      [sandbox.payer.fhirBase, false],
      [sandbox.secondPayer.fhirBase, false],
    ] as const) {
      const { status, body } = await metadataOf(base);
      expect(status).toBe(200);
      expect(body['udap_versions_supported']).toEqual(['1']);
      expect(body['udap_profiles_supported']).toEqual(expect.arrayContaining(['udap_dcr', 'udap_authn', 'udap_authz']));
      expect(body['udap_certifications_supported']).toEqual([]);
      expect(body['udap_authorization_extensions_supported']).toEqual(['hl7-b2b']);
      expect(body['token_endpoint_auth_methods_supported']).toEqual(['private_key_jwt']);
      expect(body['token_endpoint_auth_signing_alg_values_supported']).toContain('RS256');
      expect(body['registration_endpoint_jwt_signing_alg_values_supported']).toContain('RS256');
      const signed = body['signed_metadata'] as string;
      expect(await refusalOf(base, signed)).toBeUndefined();
      const claims = decodeJwt(signed);
      expect(claims.iss).toBe(base);
      expect(claims.sub).toBe(base);
      expect(claims.jti).toEqual(expect.any(String));
      expect(claims.exp! > claims.iat!).toBe(true);
      expect(claims['token_endpoint']).toBe(body['token_endpoint']);
      expect(claims['registration_endpoint']).toBe(body['registration_endpoint']);
      if (code) {
        expect(body['udap_profiles_supported']).toContain('udap_to');
        expect(body['grant_types_supported']).toEqual(expect.arrayContaining(['authorization_code', 'refresh_token']));
        expect(claims['authorization_endpoint']).toBe(body['authorization_endpoint']);
        expect(body['scopes_supported']).toContain('udap');
        // hl7-b2b only for client_credentials, so not in every token request.
        expect(body['udap_authorization_extensions_required']).toEqual([]);
      } else {
        expect(body['grant_types_supported']).toEqual(['client_credentials']);
        expect(body['udap_authorization_extensions_required']).toEqual(['hl7-b2b']);
        expect(body['authorization_endpoint']).toBeUndefined();
      }
    }
  });

  it('answers 204 for a community it does not know, and the metadata for its own', async () => {
    expect((await metadataOf(sandbox.payer.fhirBase, '?community=urn:example:other')).status).toBe(204);
    const own = await metadataOf(sandbox.payer.fhirBase, `?community=${encodeURIComponent(SANDBOX_COMMUNITY_URI)}`);
    expect(own.status).toBe(200);
  });

  it.each(['bad-signature', 'untrusted-anchor', 'expired-certificate', 'san-mismatch'] as const)(
    'fault udapMetadata=%s gives signed metadata a client refuses for that reason',
    async (fault) => {
      const put = await fetch(`${sandbox.payer.peer.origin}/_sandbox/faults`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ udapMetadata: fault }),
      });
      expect(put.status).toBe(200);
      const { body } = await metadataOf(sandbox.payer.fhirBase);
      expect(await refusalOf(sandbox.payer.fhirBase, body['signed_metadata'] as string)).toBe(fault);
      // The other peers are not affected.
      const ehr = await metadataOf(sandbox.ehr.fhirBase);
      expect(await refusalOf(sandbox.ehr.fhirBase, ehr.body['signed_metadata'] as string)).toBeUndefined();
    },
  );

  it('fault udapProfilesOmitted leaves those profiles out of the metadata (an EHR without Tiered OAuth)', async () => {
    const put = await fetch(`${sandbox.ehr.peer.origin}/_sandbox/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ udapProfilesOmitted: ['udap_to'] }),
    });
    expect(put.status).toBe(200);
    const { body } = await metadataOf(sandbox.ehr.fhirBase);
    expect(body['udap_profiles_supported']).toEqual(['udap_dcr', 'udap_authn', 'udap_authz']);
    expect(await refusalOf(sandbox.ehr.fhirBase, body['signed_metadata'] as string)).toBeUndefined();
  });

  it('serves the community anchor and issues client certificates over HTTP, validating the request', async () => {
    const anchor = await (await fetch(`${sandbox.ehr.peer.origin}/udap/anchor.pem`)).text();
    expect(anchor).toBe(sandbox.udap.anchorPem);
    const issued = await fetch(`${sandbox.ehr.peer.origin}/udap/certificates`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sanUris: ['https://dtr.example.org/app'] }),
    });
    expect(issued.status).toBe(201);
    const { certificatePem, x5c } = (await issued.json()) as { certificatePem: string; x5c: string[] };
    expect(new X509Certificate(certificatePem).subjectAltName).toContain('URI:https://dtr.example.org/app');
    expect(verifyChain(x5c, [anchor], new Date()).sanUris).toEqual(['https://dtr.example.org/app']);
    const p12 = await fetch(`${sandbox.ehr.peer.origin}/udap/certificates`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sanUris: ['https://dtr.example.org/app'], format: 'pkcs12', passphrase: 'changeit' }),
    });
    expect(p12.status).toBe(201);
    expect(p12.headers.get('content-type')).toContain('application/x-pkcs12');
    for (const bad of [
      {},
      { sanUris: [] },
      { sanUris: ['not a uri'] },
      { sanUris: ['https://a.example'], format: 'pkcs12' },
    ]) {
      const refused = await fetch(`${sandbox.ehr.peer.origin}/udap/certificates`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(bad),
      });
      expect(refused.status).toBe(400);
    }
  });
});

describe('sandbox UDAP registration and token endpoint (payer, client_credentials)', () => {
  const san = 'https://dtr.example.org/udap-client';
  const endpoint = () => `${sandbox.payer.tokenEndpoint.replace(/\/token$/, '')}/register`;
  const cert = () => sandbox.udap.ca.issue({ sanUris: [san] });
  let clientCert: ReturnType<typeof cert>;
  let clientId: string;

  beforeAll(() => {
    clientCert = cert();
  });

  const assertion = (extra: Record<string, unknown> = {}, c = clientCert, id = clientId) =>
    signUdapJwt(c, { iss: id, sub: id, aud: sandbox.payer.tokenEndpoint, extensions: HL7_B2B, ...extra });
  const askToken = async (jwt: string, extra: Record<string, string> = {}) =>
    tokenRequest(sandbox.payer.tokenEndpoint, {
      grant_type: 'client_credentials',
      scope: 'system/Questionnaire.rs',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: jwt,
      udap: '1',
      ...extra,
    });

  it('registers a new SAN (201, client_id) and grants a token to a good UDAP authentication token', async () => {
    const mark = sandbox.payer.peer.log.mark();
    const answer = await register(endpoint(), await signUdapJwt(clientCert, b2bStatement(san, endpoint())));
    expect(answer.status).toBe(201);
    clientId = answer.body['client_id'] as string;
    expect(clientId).toEqual(expect.any(String));
    // Logged with the client made and the statement's claims (what a test of a client reads back).
    expect(sandbox.payer.peer.log.since(mark)).toEqual([
      expect.objectContaining({
        method: 'POST',
        path: '/auth/register',
        status: 201,
        clientId,
        softwareStatement: expect.objectContaining({ iss: san, sub: san, grant_types: ['client_credentials'] }),
      }),
    ]);
    expect(answer.body['grant_types']).toEqual(['client_credentials']);
    expect(answer.body['token_endpoint_auth_method']).toBe('private_key_jwt');
    expect(answer.body['iss']).toBeUndefined();
    const asked = sandbox.payer.peer.log.mark();
    const token = await askToken(await assertion(), { scope: 'system/ValueSet.rs' });
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    // The token request is logged with the authentication token that passed (header with x5c, claims, udap=1).
    expect(sandbox.payer.peer.log.since(asked)).toEqual([
      expect.objectContaining({
        path: '/auth/token',
        status: 200,
        clientId,
        grant: { type: 'client_credentials' },
        udapAuthentication: {
          header: expect.objectContaining({ alg: 'RS256', x5c: clientCert.x5c }),
          claims: expect.objectContaining({ iss: clientId, extensions: HL7_B2B }),
          udap: '1',
        },
      }),
    ]);
    const fhir = await fetch(`${sandbox.payer.fhirBase}/ValueSet/$expand?url=http://example.org/none`, {
      headers: { authorization: `Bearer ${String(token.body['access_token'])}` },
    });
    // Authorized: the payer looked for the ValueSet (an unknown one is a 404, a refused token a 401).
    expect(fhir.status).toBe(404);
  });

  it('refuses authentication tokens: replayed jti, wrong SAN, untrusted chain, no hl7-b2b, wrong aud, too long', async () => {
    const once = await assertion();
    expect((await askToken(once)).status).toBe(200);
    const mark = sandbox.payer.peer.log.mark();
    const replay = await askToken(once);
    expect(replay.status).toBe(401);
    expect(replay.body).toMatchObject({ error: 'invalid_client', error_description: 'jti already used' });
    // The refusal is in the payer's request log, as the requests the token endpoint answers are.
    expect(sandbox.payer.peer.log.since(mark)).toEqual([
      expect.objectContaining({ path: '/auth/token', clientId, status: 401, grant: { type: 'client_credentials' } }),
    ]);

    const otherSan = sandbox.udap.ca.issue({ sanUris: ['https://someone-else.example.org/app'] });
    const wrongSan = await askToken(await assertion({}, otherSan));
    expect(wrongSan.status).toBe(401);
    expect(wrongSan.body['error_description']).toContain('SAN');

    const untrusted = sandbox.udap.untrustedCa.issue({ sanUris: [san] });
    const chain = await askToken(await assertion({}, untrusted));
    expect(chain.status).toBe(401);
    expect(chain.body['error_description']).toContain('does not chain to a trusted anchor');

    const noB2b = await askToken(await assertion({ extensions: {} }));
    expect(noB2b.body).toMatchObject({ error: 'invalid_client' });
    expect(noB2b.body['error_description']).toContain('hl7-b2b');
    const noPurpose = await askToken(
      await assertion({ extensions: { 'hl7-b2b': { version: '1', organization_id: 'https://o.example' } } }),
    );
    expect(noPurpose.body['error_description']).toContain('purpose_of_use');

    const wrongAud = await askToken(await assertion({ aud: sandbox.payer.fhirBase }));
    expect(wrongAud.body['error_description']).toContain('aud');
    const long = await askToken(
      await signUdapJwt(
        clientCert,
        { iss: clientId, sub: clientId, aud: sandbox.payer.tokenEndpoint, extensions: HL7_B2B },
        { lifetime: 600 },
      ),
    );
    expect(long.body['error_description']).toContain('300 seconds');
    const noUdap = await askToken(await assertion(), { udap: '' });
    expect(noUdap.status).toBe(401);
  });

  it('a client of this payer is unknown at the other payer', async () => {
    const jwt = await signUdapJwt(clientCert, {
      iss: clientId,
      sub: clientId,
      aud: sandbox.secondPayer.tokenEndpoint,
      extensions: HL7_B2B,
    });
    const answer = await tokenRequest(sandbox.secondPayer.tokenEndpoint, {
      grant_type: 'client_credentials',
      scope: 'system/Questionnaire.rs',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: jwt,
      udap: '1',
    });
    expect(answer.status).toBe(401);
    expect(answer.body['error_description']).toContain('not registered here');
  });

  it('a second registration from the same SAN modifies the client and keeps its client_id', async () => {
    const answer = await register(
      endpoint(),
      await signUdapJwt(
        clientCert,
        b2bStatement(san, endpoint(), { client_name: 'Renamed', scope: 'system/ValueSet.rs' }),
      ),
    );
    expect(answer.status).toBe(200);
    expect(answer.body['client_id']).toBe(clientId);
    expect(answer.body['client_name']).toBe('Renamed');
    expect(answer.body['scope']).toBe('system/ValueSet.rs');
  });

  it('refuses registrations, each naming its cause', async () => {
    const s = 'https://dtr.example.org/refused';
    const good = sandbox.udap.ca.issue({ sanUris: [s] });
    const cases: Array<[string, Promise<string>, string, string]> = [
      [
        'bad signature',
        signUdapJwt(good, b2bStatement(s, endpoint())).then((jwt) => {
          const [h, p, sig] = jwt.split('.') as [string, string, string];
          const bytes = Buffer.from(sig, 'base64url');
          bytes[5] = bytes[5]! ^ 1;
          return `${h}.${p}.${bytes.toString('base64url')}`;
        }),
        'invalid_software_statement',
        'signature',
      ],
      [
        'untrusted anchor',
        signUdapJwt(sandbox.udap.untrustedCa.issue({ sanUris: [s] }), b2bStatement(s, endpoint())),
        'unapproved_software_statement',
        'does not chain to a trusted anchor',
      ],
      [
        'expired certificate',
        signUdapJwt(
          sandbox.udap.ca.issue({
            sanUris: [s],
            notBefore: new Date(Date.now() - 2 * 86_400_000),
            notAfter: new Date(Date.now() - 86_400_000),
          }),
          b2bStatement(s, endpoint()),
        ),
        'unapproved_software_statement',
        'expired',
      ],
      [
        'SAN not iss',
        signUdapJwt(good, b2bStatement('https://dtr.example.org/other', endpoint())),
        'invalid_software_statement',
        'not a SAN URI',
      ],
      [
        'both grant types',
        signUdapJwt(good, b2bStatement(s, endpoint(), { grant_types: ['authorization_code', 'client_credentials'] })),
        'invalid_client_metadata',
        'both authorization_code and client_credentials',
      ],
      [
        'authorization_code at a payer',
        signUdapJwt(
          good,
          b2bStatement(s, endpoint(), {
            grant_types: ['authorization_code'],
            response_types: ['code'],
            redirect_uris: ['https://dtr.example.org/callback'],
            logo_uri: 'https://dtr.example.org/logo.png',
          }),
        ),
        'invalid_client_metadata',
        'does not register authorization_code',
      ],
      [
        'wrong aud',
        signUdapJwt(good, b2bStatement(s, sandbox.payer.tokenEndpoint)),
        'invalid_software_statement',
        'aud',
      ],
      [
        'lifetime over 5 minutes',
        signUdapJwt(good, b2bStatement(s, endpoint()), { lifetime: 301 }),
        'invalid_software_statement',
        '300 seconds',
      ],
      [
        'sub not iss',
        signUdapJwt(good, b2bStatement(s, endpoint(), { sub: 'https://dtr.example.org/someone' })),
        'invalid_software_statement',
        'sub must equal iss',
      ],
      [
        'expired statement',
        signUdapJwt(good, b2bStatement(s, endpoint()), { iat: Math.floor(Date.now() / 1000) - 600 }),
        'invalid_software_statement',
        'expired',
      ],
      [
        'HS256',
        new SignJWT(b2bStatement(s, endpoint()))
          .setProtectedHeader({ alg: 'HS256', x5c: good.x5c })
          .setIssuedAt()
          .setExpirationTime('5m')
          .setJti('hs256')
          .sign(new TextEncoder().encode('a shared secret of enough length!')),
        'invalid_software_statement',
        'alg HS256',
      ],
      [
        'no contacts',
        signUdapJwt(good, b2bStatement(s, endpoint(), { contacts: [] })),
        'invalid_client_metadata',
        'mailto',
      ],
    ];
    for (const [name, jwt, error, cause] of cases) {
      const answer = await register(endpoint(), await jwt);
      expect(answer.status, name).toBe(400);
      expect(answer.body['error'], name).toBe(error);
      expect(answer.body['error_description'], name).toContain(cause);
    }
  });

  it('answers a body that is not JSON with a registration error, not a page', async () => {
    const response = await fetch(endpoint(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"software_statement": ',
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: 'invalid_software_statement' });
    const noUdap = await register(endpoint(), 'x');
    expect(noUdap.body['error']).toBe('invalid_software_statement');
  });

  it('refuses a replayed software statement', async () => {
    const s = 'https://dtr.example.org/replayed';
    const statement = await signUdapJwt(sandbox.udap.ca.issue({ sanUris: [s] }), b2bStatement(s, endpoint()));
    expect((await register(endpoint(), statement)).status).toBe(201);
    const again = await register(endpoint(), statement);
    expect(again.status).toBe(400);
    expect(again.body).toMatchObject({ error: 'invalid_software_statement', error_description: 'jti already used' });
  });

  it('an empty grant_types cancels the registration; its tokens are then refused', async () => {
    const answer = await register(
      endpoint(),
      await signUdapJwt(clientCert, b2bStatement(san, endpoint(), { grant_types: [] })),
    );
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ client_id: clientId, grant_types: [] });
    const token = await askToken(await assertion());
    expect(token.status).toBe(401);
    expect(token.body['error']).toBe('invalid_client');
  });
});

describe('sandbox UDAP registration at the EHR (authorization_code)', () => {
  const endpoint = () => `${sandbox.ehr.auth.issuer}/register`;
  const codeStatement = (s: string, extra: Record<string, unknown> = {}) =>
    b2bStatement(s, endpoint(), {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['https://dtr.example.org/callback'],
      logo_uri: 'https://dtr.example.org/logo.png',
      scope: 'openid fhirUser udap launch/patient patient/*.rs',
      ...extra,
    });

  it('registers an authorization_code client with its redirect URIs', async () => {
    const s = 'https://dtr.example.org/ehr-client';
    const answer = await register(
      endpoint(),
      await signUdapJwt(sandbox.udap.ca.issue({ sanUris: [s] }), codeStatement(s)),
    );
    expect(answer.status).toBe(201);
    expect(answer.body).toMatchObject({
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['https://dtr.example.org/callback'],
    });
  });

  it('refuses an authorization_code registration without redirect_uris, logo_uri or response_types', async () => {
    const s = 'https://dtr.example.org/ehr-refused';
    const cert = sandbox.udap.ca.issue({ sanUris: [s] });
    for (const [omit, cause] of [
      ['redirect_uris', 'redirect_uris is required'],
      ['logo_uri', 'logo_uri'],
      ['response_types', 'response_types'],
    ] as const) {
      const claims = codeStatement(s) as Record<string, unknown>;
      delete claims[omit];
      const answer = await register(endpoint(), await signUdapJwt(cert, claims));
      expect(answer.status, omit).toBe(400);
      expect(answer.body['error'], omit).toBe('invalid_client_metadata');
      expect(answer.body['error_description'], omit).toContain(cause);
    }
    const refreshOnly = await register(
      endpoint(),
      await signUdapJwt(cert, b2bStatement(s, endpoint(), { grant_types: ['refresh_token'] })),
    );
    expect(refreshOnly.body['error']).toBe('invalid_client_metadata');
  });
});
