import { createDataSource } from '@dtr/persistence';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { KeyRingSecretBox } from '../key-ring-secret-box.js';
import { isSupplementWriteScope, isWriteScope, TenantRegistry, type TenantInput } from './tenant-registry.service.js';

const SECRET = 'tenant-secret-value-7f3a9';

function tenant(id: string, overrides: Partial<TenantInput> = {}): TenantInput {
  return {
    id,
    name: `EHR ${id}`,
    fhirBase: `https://${id}.ehr.example.org/fhir/`,
    discloseMode: 'user-delegated',
    supplement: {
      clientId: `dtr-supplement-${id}`,
      authMethod: 'client_secret_basic',
      clientSecret: SECRET,
      scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs'],
      redirectUri: 'https://dtr.example.org/callback',
    },
    disclose: {
      clientId: `dtr-disclose-${id}`,
      authMethod: 'private_key_jwt',
      signingAlg: 'ES384',
      scopes: ['openid', 'fhirUser', 'user/QuestionnaireResponse.cru', 'patient/*.rs'],
      redirectUri: 'https://dtr.example.org/callback',
    },
    ...overrides,
  };
}

describe('TenantRegistry (real PostgreSQL)', () => {
  let dataSource: DataSource;
  let registry: TenantRegistry;
  const suffix = Math.random().toString(36).slice(2, 8);

  beforeAll(async () => {
    dataSource = createDataSource({ url: inject('databaseUrl') });
    await dataSource.initialize();
    registry = new TenantRegistry(dataSource, new KeyRingSecretBox(new Map([['test', randomBytes(32)]])), {
      allowInsecureLoopback: false,
    });
  });
  afterAll(async () => {
    await dataSource?.destroy();
  });

  it('registers a tenant with two identities and finds it by its iss', async () => {
    const view = await registry.upsert(tenant(`a-${suffix}`));
    expect(view.fhirBase).toBe(`https://a-${suffix}.ehr.example.org/fhir`);
    expect(view.registrations.map((r) => [r.purpose, r.clientId, r.hasSecret])).toEqual([
      ['disclose', `dtr-disclose-a-${suffix}`, false],
      ['supplement', `dtr-supplement-a-${suffix}`, true],
    ]);
    expect(JSON.stringify(view)).not.toContain(SECRET);
    expect(await registry.findByFhirBase(`https://a-${suffix}.ehr.example.org/fhir`)).toMatchObject({
      id: `a-${suffix}`,
    });
    expect(await registry.findByFhirBase(`https://evil.example.org/fhir`)).toBeUndefined();
    expect(await registry.findByFhirBase('not a url')).toBeUndefined();
  });

  it('stores the client secret only encrypted, and gives it back for the token endpoint', async () => {
    await registry.upsert(tenant(`b-${suffix}`));
    const client = new pg.Client({ connectionString: inject('databaseUrl') });
    await client.connect();
    try {
      const rows = await client.query(`SELECT * FROM ehr_registration WHERE tenant_id = $1`, [`b-${suffix}`]);
      expect(JSON.stringify(rows.rows)).not.toContain(SECRET);
    } finally {
      await client.end();
    }
    const credentials = await registry.credentialsFor(`b-${suffix}`, 'supplement');
    expect(credentials).toMatchObject({ clientSecret: SECRET, authMethod: 'client_secret_basic' });
    expect(await registry.credentialsFor(`b-${suffix}`, 'disclose')).toMatchObject({ signingAlg: 'ES384' });
  });

  it('enforces the two-identity rules with errors naming the field', async () => {
    const expectInvalid = async (input: unknown, field: string) =>
      expect(registry.upsert(input)).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringContaining(field),
      });
    const base = tenant(`c-${suffix}`);
    await expectInvalid({ ...base, disclose: undefined }, 'disclose');
    await expectInvalid(
      { ...base, supplement: { ...base.supplement, scopes: ['patient/*.cruds'] } },
      'supplement.scopes',
    );
    for (const scopes of [
      ['patient/QuestionnaireResponse.cud'],
      ['user/Observation.cu'],
      ['user/*.write'],
      ['system/QuestionnaireResponse.cu'],
      ['patient/QuestionnaireResponse.*'],
      ['user/QuestionnaireResponse.cu', 'patient/DocumentReference.c'],
    ]) {
      await expectInvalid(
        { ...base, supplement: { ...base.supplement, scopes } },
        `supplement.scopes: may write only the DTR QuestionnaireResponse`,
      );
    }
    await expectInvalid(
      { ...base, disclose: { ...base.disclose!, clientId: base.supplement.clientId } },
      'disclose.clientId',
    );
    await expectInvalid({ ...base, disclose: { ...base.disclose!, scopes: ['patient/*.rs'] } }, 'disclose.scopes');
    await expectInvalid({ ...base, discloseMode: 'system' }, 'disclose.scopes');
    await expectInvalid(
      { ...base, supplement: { ...base.supplement, clientSecret: undefined } },
      'supplement.clientSecret',
    );
    await expectInvalid({ ...base, fhirBase: 'http://ehr.example.org/fhir' }, 'fhirBase');
    await expectInvalid({ ...base, id: 'Bad Id' }, 'id');
    await expectInvalid({ ...base, extra: true }, 'tenant');
  });

  it('lets the supplement identity create and update the QuestionnaireResponse, in v1 and v2 scope forms', async () => {
    const base = tenant(`g-${suffix}`);
    const scopes = [
      'launch',
      'patient/*.rs',
      'user/QuestionnaireResponse.write',
      'patient/QuestionnaireResponse.write',
      'user/QuestionnaireResponse.cu',
      'patient/QuestionnaireResponse.c',
      'user/QuestionnaireResponse.u',
      'user/QuestionnaireResponse.crus',
    ];
    const view = await registry.upsert({ ...base, supplement: { ...base.supplement, scopes } });
    expect((await registry.credentialsFor(view.id, 'supplement')).scopes).toEqual(scopes);
  });

  it('allows one client for both purposes only with the explicit flag', async () => {
    const base = tenant(`d-${suffix}`);
    const single = await registry.upsert({
      ...base,
      singleClient: true,
      disclose: undefined,
      supplement: { ...base.supplement, scopes: ['launch', 'patient/*.rs', 'user/QuestionnaireResponse.cu'] },
    });
    expect(single.singleClient).toBe(true);
    expect((await registry.credentialsFor(`d-${suffix}`, 'disclose')).purpose).toBe('supplement');
  });

  it('stores the origins allowed to frame the app, normalised, and refuses anything but exact https origins', async () => {
    const id = `g-${suffix}`;
    const plain = await registry.upsert(tenant(id));
    expect(plain.frameAncestors).toEqual([]);
    const framed = await registry.upsert(
      tenant(id, {
        frameAncestors: [
          'https://EHR.North.example.org',
          'https://portal.example.org:8443/',
          'https://ehr.north.example.org:443',
        ],
      }),
    );
    expect(framed.frameAncestors).toEqual(['https://ehr.north.example.org', 'https://portal.example.org:8443']);
    expect(await registry.frameAncestors(id)).toEqual(framed.frameAncestors);
    expect((await registry.list()).find((t) => t.id === id)?.frameAncestors).toEqual(framed.frameAncestors);
    expect(await registry.frameAncestors('no-such-tenant')).toEqual([]);

    const refused: Array<[string, RegExp]> = [
      ['https://*.example.org', /wildcards are not accepted/],
      ['*', /wildcards are not accepted/],
      ["'self'", /is not an origin/],
      ['https://ehr.example.org/app', /origin only/],
      ['https://ehr.example.org/?x=1', /origin only/],
      ['https://user:pw@ehr.example.org', /origin only/],
      ['http://ehr.example.org', /must use https/],
      ['http://127.0.0.1:3001', /must use https \(got/],
      ['data:text/html,hi', /origin only/],
      ['https://ok.example.org; script-src *', /wildcards|not an origin|origin only/],
    ];
    for (const [origin, message] of refused) {
      const error = await registry.upsert(tenant(id, { frameAncestors: ['https://ok.example.org', origin] })).then(
        () => undefined,
        (e: unknown) => e as { code: string; message: string; expression: string[] },
      );
      expect(error, origin).toMatchObject({ code: 'INVALID_INPUT', expression: ['frameAncestors.1'] });
      expect(error!.message, origin).toMatch(/^frameAncestors\.1: /);
      expect(error!.message, origin).toMatch(message);
    }
    // Loopback http only where the outbound policy allows it (development and tests).
    const dev = new TenantRegistry(dataSource, new KeyRingSecretBox(new Map([['test', randomBytes(32)]])), {
      allowInsecureLoopback: true,
    });
    expect(
      dev.validate(tenant(id, { frameAncestors: ['http://127.0.0.1:3001', 'http://localhost:8080'] })).frameAncestors,
    ).toEqual(['http://127.0.0.1:3001', 'http://localhost:8080']);
    expect(() => dev.validate(tenant(id, { frameAncestors: ['http://ehr.example.org'] }))).toThrow(/loopback/);
    // A PUT replaces the tenant: an update without the list clears it.
    expect((await registry.upsert(tenant(id))).frameAncestors).toEqual([]);
  });

  it('refuses a second tenant on the same FHIR base, and replaces registrations on update', async () => {
    await registry.upsert(tenant(`e-${suffix}`));
    await expect(
      registry.upsert({ ...tenant(`f-${suffix}`), fhirBase: `https://e-${suffix}.ehr.example.org/fhir` }),
    ).rejects.toMatchObject({
      code: 'CONFLICT',
    });
    const updated = await registry.upsert({ ...tenant(`e-${suffix}`), name: 'Renamed' });
    expect(updated.name).toBe('Renamed');
    expect(updated.registrations).toHaveLength(2);
    expect(await registry.remove(`e-${suffix}`)).toBe(true);
    expect(await registry.get(`e-${suffix}`)).toBeUndefined();
  });
});

describe('isWriteScope', () => {
  it('knows v1 and v2 write scopes', () => {
    for (const s of [
      'patient/*.write',
      'user/Observation.*',
      'system/QuestionnaireResponse.cu',
      'user/*.cruds',
      'patient/X.d',
    ]) {
      expect(isWriteScope(s)).toBe(true);
    }
    for (const s of [
      'patient/*.read',
      'user/*.rs',
      'launch',
      'openid',
      'patient/Observation.rs?category=vital-signs',
    ]) {
      expect(isWriteScope(s)).toBe(false);
    }
  });
});

describe('isSupplementWriteScope', () => {
  it('allows create/update of the QuestionnaireResponse only', () => {
    for (const s of [
      'user/QuestionnaireResponse.write',
      'patient/QuestionnaireResponse.cu',
      'user/QuestionnaireResponse.crus',
    ])
      expect(isSupplementWriteScope(s)).toBe(true);
    for (const s of [
      'user/QuestionnaireResponse.cud',
      'user/QuestionnaireResponse.d',
      'user/QuestionnaireResponse.rs',
      'user/QuestionnaireResponse.*',
      'system/QuestionnaireResponse.cu',
      'user/*.cu',
      'user/Questionnaire.cu',
      'user/QuestionnaireResponse.cu?status=completed',
    ])
      expect(isSupplementWriteScope(s)).toBe(false);
  });
});
