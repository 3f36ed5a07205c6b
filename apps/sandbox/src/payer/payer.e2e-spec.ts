import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPeerServer } from '../shared/peer-server.js';
import { fingerprint } from '../shared/request-log.js';
import { createPayerServer, DTR_VERSION_HEADER, type PayerServer } from './index.js';
import type { PeerServer } from '../shared/peer-server.js';

const fixtures = path.resolve(import.meta.dirname, '../../fixtures/packages');
const HOME_O2 = 'http://example.org/dtr/Questionnaire/home-oxygen|1.0.0';
const FULL_SCOPE = 'system/Questionnaire.rs system/Library.rs system/ValueSet.rs system/QuestionnaireResponse.c';

interface ClientKey {
  clientId: string;
  privateKey: CryptoKey;
  kid: string;
}

let jwksServer: Server;
let peer: PeerServer;
let payer: PayerServer;
const rs: ClientKey = { clientId: 'dtr-rs384', kid: 'rs-1' } as ClientKey;
const es: ClientKey = { clientId: 'dtr-es384', kid: 'es-1' } as ClientKey;
const narrow: ClientKey = { clientId: 'dtr-narrow', kid: 'narrow-1' } as ClientKey;

function configFor(c: ClientKey, modify?: (payload: Record<string, unknown>) => void): oidc.Configuration {
  const config = new oidc.Configuration(
    { issuer: `${peer.origin}/auth`, token_endpoint: payer.tokenEndpoint },
    c.clientId,
    {},
    oidc.PrivateKeyJwt(
      { key: c.privateKey, kid: c.kid },
      {
        // SMART wants typ JWT and aud = the token endpoint (openid-client's defaults differ).
        [oidc.modifyAssertion]: (header, payload) => {
          header.typ = 'JWT';
          payload.aud = payer.tokenEndpoint;
          modify?.(payload as Record<string, unknown>);
        },
      },
    ),
  );
  oidc.allowInsecureRequests(config); // loopback only
  return config;
}

async function token(c: ClientKey = rs, scope = FULL_SCOPE): Promise<string> {
  const t = await oidc.clientCredentialsGrant(configFor(c), { scope });
  return t.access_token;
}

async function post(pathName: string, body: unknown, tok?: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${payer.fhirBase}${pathName}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/fhir+json',
      ...(tok ? { authorization: `Bearer ${tok}` } : {}),
      ...headers,
    },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

const coverage = {
  resourceType: 'Coverage',
  id: 'cov1',
  status: 'active',
  beneficiary: { reference: 'Patient/p1' },
  payor: [{ display: 'Sandbox payer' }],
};
const order = {
  resourceType: 'DeviceRequest',
  id: 'dr1',
  status: 'draft',
  intent: 'order',
  codeCodeableConcept: { coding: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: 'E0424' }] },
  subject: { reference: 'Patient/p1' },
};
const packageInput = (extra: unknown[] = []) => ({
  resourceType: 'Parameters',
  parameter: [{ name: 'coverage', resource: coverage }, { name: 'order', resource: order }, ...extra],
});

beforeAll(async () => {
  for (const [c, alg] of [
    [rs, 'RS384'],
    [es, 'ES384'],
    [narrow, 'ES384'],
  ] as const) {
    c.privateKey = (await generateKeyPair(alg, { extractable: true })).privateKey;
  }
  const publicJwk = async (c: ClientKey, alg: string): Promise<JWK> => {
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = await exportJWK(c.privateKey);
    return { ...pub, kid: c.kid, alg, use: 'sig' };
  };
  const jwks = { keys: [await publicJwk(rs, 'RS384'), await publicJwk(es, 'ES384'), await publicJwk(narrow, 'ES384')] };
  jwksServer = createServer((_req, res) => res.setHeader('content-type', 'application/json').end(JSON.stringify(jwks)));
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;

  peer = await startPeerServer('payer', '127.0.0.1', 0);
  payer = await createPayerServer({
    peer,
    clients: [
      { clientId: rs.clientId, auth: 'private_key_jwt', jwksUri },
      { clientId: es.clientId, auth: 'private_key_jwt', jwks },
      { clientId: narrow.clientId, auth: 'private_key_jwt', jwksUri, scopes: ['system/ValueSet.rs'] },
    ],
    packageDirs: [path.join(fixtures, 'home-oxygen-example'), path.join(fixtures, 'adaptive-example')],
  });
});

afterAll(async () => {
  await payer?.close();
  await new Promise((resolve) => jwksServer?.close(resolve));
});

describe('Backend Services token endpoint', () => {
  it('issues a token to an RS384 client whose keys are at a loopback JWKS URL', async () => {
    const t = await oidc.clientCredentialsGrant(configFor(rs), { scope: FULL_SCOPE });
    expect(t.access_token).toBeTruthy();
    expect(t.token_type.toLowerCase()).toBe('bearer');
    expect(t.expires_in).toBeGreaterThan(0);
    expect(t.scope?.split(' ').sort()).toEqual(FULL_SCOPE.split(' ').sort());
    expect(payer.issuedTokenFingerprints().has(fingerprint(t.access_token))).toBe(true);
    const logged = peer.log
      .all()
      .filter((e) => e.path === '/auth/token')
      .at(-1);
    expect(logged).toMatchObject({ method: 'POST', clientId: rs.clientId, status: 200 });
  });

  it('issues a token to an ES384 client with inline keys', async () => {
    expect(await token(es)).toBeTruthy();
  });

  it('refuses a replayed client assertion (same jti)', async () => {
    const fixed = (p: Record<string, unknown>) => {
      p['jti'] = 'replayed-jti-1';
    };
    await oidc.clientCredentialsGrant(configFor(rs, fixed), { scope: FULL_SCOPE });
    await expect(oidc.clientCredentialsGrant(configFor(rs, fixed), { scope: FULL_SCOPE })).rejects.toMatchObject({
      error: 'invalid_client',
    });
  });

  it('refuses an assertion whose aud is not the token endpoint', async () => {
    const wrongAud = (p: Record<string, unknown>) => {
      p['aud'] = `${peer.origin}/auth`;
    };
    await expect(oidc.clientCredentialsGrant(configFor(rs, wrongAud), { scope: FULL_SCOPE })).rejects.toMatchObject({
      error: 'invalid_client',
    });
  });
});

describe('FHIR endpoint access control', () => {
  it('answers 401 without a token and 401 with a token it did not issue', async () => {
    const none = await post('/Questionnaire/$questionnaire-package', packageInput());
    expect(none.status).toBe(401);
    expect(none.body.resourceType).toBe('OperationOutcome');
    const foreign = await post('/Questionnaire/$questionnaire-package', packageInput(), 'not-from-this-payer');
    expect(foreign.status).toBe(401);
    const logged = peer.log.all().at(-1);
    expect(logged).toMatchObject({
      status: 401,
      tokenIssuedHere: false,
      tokenFingerprint: fingerprint('not-from-this-payer'),
    });
  });

  it('answers 403 when the scopes do not cover the resource type', async () => {
    const t = await token(narrow, 'system/ValueSet.rs');
    const res = await post('/Questionnaire/$questionnaire-package', packageInput(), t);
    expect(res.status).toBe(403);
    expect(res.body.issue[0].code).toBe('forbidden');
    // The same token is fine where its scope applies.
    const vs = await fetch(
      `${payer.fhirBase}/ValueSet/$expand?url=${encodeURIComponent('http://example.org/dtr/ValueSet/home-oxygen-delivery-system')}`,
      {
        headers: { authorization: `Bearer ${t}` },
      },
    );
    expect(vs.status).toBe(200);
    const body = (await vs.json()) as any;
    expect(body.expansion.contains.map((c: { code: string }) => c.code)).toContain('concentrator');
  });
});

describe('$questionnaire-package', () => {
  it('answers DTR 2.2 shape: packagebundle parts with the Questionnaire, its Library and ValueSets', async () => {
    const t = await token();
    const res = await post('/Questionnaire/$questionnaire-package', packageInput(), t);
    expect(res.status).toBe(200);
    expect(res.body.resourceType).toBe('Parameters');
    const parts = res.body.parameter as Array<{ name: string; resource: any }>;
    expect(parts.map((p) => p.name)).toEqual(['packagebundle']);
    const bundle = parts[0]!.resource;
    expect(bundle.resourceType).toBe('Bundle');
    expect(bundle.type).toBe('collection');
    const kinds = bundle.entry.map((e: any) => `${e.resource.resourceType} ${e.resource.url}`);
    expect(kinds).toEqual([
      'Questionnaire http://example.org/dtr/Questionnaire/home-oxygen',
      'Library http://example.org/dtr/Library/HomeOxygenExample',
      'ValueSet http://example.org/dtr/ValueSet/home-oxygen-delivery-system',
      'ValueSet http://example.org/dtr/ValueSet/home-oxygen-qualifying-conditions',
    ]);
    const library = bundle.entry[1].resource;
    expect(library.content.map((c: any) => c.contentType).sort()).toEqual(['application/elm+json', 'text/cql']);
    const logged = peer.log.all().at(-1);
    expect(logged).toMatchObject({
      method: 'POST',
      path: '/fhir/Questionnaire/$questionnaire-package',
      clientId: rs.clientId,
      tokenIssuedHere: true,
      tokenFingerprint: fingerprint(t),
      status: 200,
    });
    expect(logged?.scopes).toContain('system/Questionnaire.rs');
  });

  it('answers DTR 2.1 shape (PackageBundle) after setIgVersion', async () => {
    payer.setIgVersion('2.1');
    try {
      const res = await post('/Questionnaire/$questionnaire-package', packageInput(), await token());
      expect(res.status).toBe(200);
      expect(res.body.parameter.map((p: any) => p.name)).toEqual(['PackageBundle']);
      expect(res.body.parameter[0].resource.entry[0].resource.url).toBe(
        'http://example.org/dtr/Questionnaire/home-oxygen',
      );
    } finally {
      payer.setIgVersion('2.2');
    }
  });

  it('answers DTR 2.0.1 shape (return) when asked by header, and 400 for an unknown version', async () => {
    const t = await token();
    const res = await post('/Questionnaire/$questionnaire-package', packageInput(), t, {
      [DTR_VERSION_HEADER]: '2.0.1',
    });
    expect(res.status).toBe(200);
    expect(res.body.parameter).toHaveLength(1);
    expect(res.body.parameter[0].name).toBe('return');
    expect(res.body.parameter[0].resource.type).toBe('collection');
    expect(res.body.parameter[0].resource.entry).toHaveLength(4);
    const bad = await post('/Questionnaire/$questionnaire-package', packageInput(), t, { [DTR_VERSION_HEADER]: '3.0' });
    expect(bad.status).toBe(400);
  });

  it('selects by questionnaire canonical, and changedsince leaves out what did not change', async () => {
    const t = await token();
    const res = await post(
      '/Questionnaire/$questionnaire-package',
      {
        resourceType: 'Parameters',
        parameter: [
          { name: 'coverage', resource: coverage },
          { name: 'questionnaire', valueCanonical: HOME_O2 },
          { name: 'changedsince', valueInstant: '2025-04-01T00:00:00Z' },
        ],
      },
      t,
    );
    expect(res.status).toBe(200);
    const urls = res.body.parameter[0].resource.entry.map((e: any) => e.resource.url);
    expect(urls).toEqual(['http://example.org/dtr/ValueSet/home-oxygen-qualifying-conditions']);
    const none = await post(
      '/Questionnaire/$questionnaire-package',
      packageInput([{ name: 'changedsince', valueInstant: '2030-01-01T00:00:00Z' }]),
      t,
    );
    expect(none.body.parameter[0].resource.entry).toEqual([]);
  });

  it('answers 400 with an OperationOutcome when coverage is missing', async () => {
    const res = await post(
      '/Questionnaire/$questionnaire-package',
      { resourceType: 'Parameters', parameter: [{ name: 'order', resource: order }] },
      await token(),
    );
    expect(res.status).toBe(400);
    expect(res.body.resourceType).toBe('OperationOutcome');
  });
});

describe('$next-question, $log-questionnaire-errors, ValueSet/$expand', () => {
  const wrap = (version: string, qr: unknown) =>
    version === '2.2'
      ? { resourceType: 'Parameters', parameter: [{ name: 'questionnaire-response', resource: qr }] }
      : version === '2.1'
        ? { resourceType: 'Parameters', parameter: [{ name: 'in', resource: qr }] }
        : qr;
  const unwrap = (version: string, body: any) =>
    version === '2.0.1'
      ? body
      : body.parameter.find((p: any) => p.name === (version === '2.2' ? 'return' : 'out'))?.resource;

  for (const version of ['2.2', '2.1', '2.0.1']) {
    it(`${version}: asks the adaptive questions one at a time in its own shapes, then completes with a determination`, async () => {
      const t = await token();
      const headers = { 'x-sandbox-dtr-version': version };
      let qr: any = {
        resourceType: 'QuestionnaireResponse',
        status: 'in-progress',
        questionnaire: 'http://example.org/dtr/Questionnaire/sleep-therapy-adaptive|1.0.0',
        extension: [
          {
            url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-coverage',
            valueReference: { reference: 'Coverage/c1' },
          },
        ],
      };
      const answers = [
        { valueBoolean: true },
        { valueDate: '1950-01-01' },
        { valueDecimal: 22 },
        { valueDate: '2025-05-01' },
      ];
      for (let i = 0; i < answers.length; i++) {
        const res = await post('/Questionnaire/$next-question', wrap(version, qr), t, headers);
        expect(res.status).toBe(200);
        qr = unwrap(version, res.body);
        expect(qr.resourceType).toBe('QuestionnaireResponse');
        expect(qr.status).toBe('in-progress');
        expect(qr.questionnaire).toBe(`#${qr.contained[0].id}`);
        expect(qr.contained[0].item).toHaveLength(i + 1);
        const asked = qr.contained[0].item[i];
        qr.item = [...(qr.item ?? []), { linkId: asked.linkId, answer: [answers[i]] }];
      }
      const done = await post('/Questionnaire/$next-question', wrap(version, qr), t, headers);
      const completed = unwrap(version, done.body);
      expect(completed.status).toBe('completed');
      expect(completed.item).toHaveLength(4);
      const determination = completed.extension.find((e: any) => e.url.endsWith('ext-coverage-information'));
      expect(determination.extension).toContainEqual({ url: 'coverage', valueReference: { reference: 'Coverage/c1' } });
      expect(determination.extension).toContainEqual({ url: 'covered', valueCode: 'covered' });
    });
  }

  it("refuses an input in another version's shape, and an answer to a question it never asked, with 400", async () => {
    const t = await token();
    const qr = {
      resourceType: 'QuestionnaireResponse',
      status: 'in-progress',
      questionnaire: 'http://example.org/dtr/Questionnaire/sleep-therapy-adaptive|1.0.0',
    };
    for (const [version, shape] of [
      ['2.2', '2.1'],
      ['2.2', '2.0.1'],
      ['2.1', '2.2'],
      ['2.1', '2.0.1'],
      ['2.0.1', '2.2'],
      ['2.0.1', '2.1'],
    ] as const) {
      const res = await post('/Questionnaire/$next-question', wrap(shape, qr), t, { 'x-sandbox-dtr-version': version });
      expect(res.status, `${shape} shape sent to a ${version} payer`).toBe(400);
      expect(res.body.resourceType).toBe('OperationOutcome');
      expect(res.body.issue[0].diagnostics).toContain(version);
    }
    const first = unwrap('2.2', (await post('/Questionnaire/$next-question', wrap('2.2', qr), t)).body);
    const stray = { ...first, item: [{ linkId: 'ahi', answer: [{ valueDecimal: 3 }] }] };
    const res = await post('/Questionnaire/$next-question', wrap('2.2', stray), t);
    expect(res.status).toBe(400);
    expect(res.body.issue[0].diagnostics).toContain('ahi');
  });

  it('checks $log-questionnaire-errors strictly in each DTR version shape and records what it took', async () => {
    const input = {
      resourceType: 'Parameters',
      parameter: [
        { name: 'questionnaire', valueCanonical: 'http://example.org/Questionnaire/q|1' },
        {
          name: 'operationOutcome',
          resource: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] },
        },
      ],
    };
    const wrapped = { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: input }] };
    const t = await token();
    const at = (version: string) => ({ [DTR_VERSION_HEADER]: version });
    for (const [version, good, bad] of [
      ['2.0.1', input, wrapped],
      ['2.1', input, wrapped],
      ['2.2', wrapped, input],
    ] as const) {
      const before = payer.loggedErrors().length;
      expect((await post('/Questionnaire/$log-questionnaire-errors', bad, t, at(version))).status).toBe(400);
      const ok = await post('/Questionnaire/$log-questionnaire-errors', good, t, at(version));
      expect(ok.status).toBe(200);
      expect(ok.body.resourceType).toBe('OperationOutcome');
      expect(payer.loggedErrors().slice(before)).toEqual([good]);
    }
    const renamed = { ...input, parameter: [input.parameter[0], { ...input.parameter[1], name: 'outcome' }] };
    expect((await post('/Questionnaire/$log-questionnaire-errors', renamed, t, at('2.1'))).status).toBe(400);
    const badCode = structuredClone(input);
    (badCode.parameter[1]!.resource as { issue: Array<{ code: string }> }).issue[0]!.code = 'define-failed';
    expect((await post('/Questionnaire/$log-questionnaire-errors', badCode, t, at('2.0.1'))).status).toBe(400);
    // The system-level path is not where any version defines it.
    expect((await post('/$log-questionnaire-errors', input, t)).status).toBe(404);
  });

  it('answers 404 for an unknown ValueSet', async () => {
    const res = await fetch(`${payer.fhirBase}/ValueSet/$expand?url=http://example.org/nothing`, {
      headers: { authorization: `Bearer ${await token()}` },
    });
    expect(res.status).toBe(404);
  });
});

describe('submission', () => {
  const submission = (value: string) => ({
    resourceType: 'Bundle',
    type: 'collection',
    entry: [
      {
        resource: {
          resourceType: 'QuestionnaireResponse',
          identifier: { system: 'urn:example:dtr', value },
          status: 'completed',
          questionnaire: HOME_O2,
        },
      },
    ],
  });

  it('records a submission, answers a repeat with the original result and marks it duplicate', async () => {
    const t = await token();
    const first = await post('/Bundle', submission('qr-1'), t);
    expect(first.status).toBe(201);
    const again = await post('/Bundle', submission('qr-1'), t);
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(first.body.id);
    const conflict = await post('/Bundle', { ...submission('qr-1'), timestamp: '2025-01-01T00:00:00Z' }, t);
    expect(conflict.status).toBe(422);

    const listed = (await (await fetch(`${peer.origin}/_sandbox/submissions`)).json()) as any[];
    const mine = listed.filter((s) => s.idempotencyKey === 'urn:example:dtr|qr-1');
    expect(mine.map((s) => s.duplicate)).toEqual([false, true]);
    expect(mine[0].body).toEqual(submission('qr-1'));
    expect(payer.submissions()).toEqual(listed);
  });

  it('uses the Idempotency-Key header before the QR identifier', async () => {
    const t = await token();
    await post('/Bundle', submission('qr-2'), t, { 'idempotency-key': 'key-abc' });
    const again = await post('/Bundle', submission('qr-2'), t, { 'idempotency-key': 'key-abc' });
    expect(again.status).toBe(200);
    expect(
      payer
        .submissions()
        .filter((s) => s.idempotencyKey === 'key-abc')
        .map((s) => s.duplicate),
    ).toEqual([false, true]);
  });

  it('answers 400 when the first entry is not a QuestionnaireResponse, and 403 without the write scope', async () => {
    const bad = await post(
      '/Bundle',
      { resourceType: 'Bundle', type: 'collection', entry: [{ resource: coverage }] },
      await token(),
    );
    expect(bad.status).toBe(400);
    const readOnly = await post('/Bundle', submission('qr-3'), await token(rs, 'system/Questionnaire.rs'));
    expect(readOnly.status).toBe(403);
  });
});

describe('fault injection as a client sees it', () => {
  it('fails the next request with 503 then succeeds', async () => {
    const t = await token();
    peer.faults.set({ failNext: 1, errorStatus: 503, paths: ['/fhir'] });
    try {
      const failed = await post('/Questionnaire/$questionnaire-package', packageInput(), t);
      expect(failed.status).toBe(503);
      const ok = await post('/Questionnaire/$questionnaire-package', packageInput(), t);
      expect(ok.status).toBe(200);
    } finally {
      peer.faults.clear();
    }
  });

  it('hangs so that the client times out', async () => {
    const t = await token();
    peer.faults.set({ hang: true, paths: ['/fhir'] });
    try {
      await expect(
        fetch(`${payer.fhirBase}/Questionnaire/$questionnaire-package`, {
          method: 'POST',
          headers: { 'content-type': 'application/fhir+json', authorization: `Bearer ${t}` },
          body: JSON.stringify(packageInput()),
          signal: AbortSignal.timeout(300),
        }),
      ).rejects.toMatchObject({ name: 'TimeoutError' });
    } finally {
      peer.faults.clear();
    }
  });
});
