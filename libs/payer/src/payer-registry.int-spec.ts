import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { sandboxCoverage } from '../../../test/support/fixtures.js';
import { LOOPBACK_POLICY, openScratchDataSource, type ScratchDataSource } from '../../../test/support/payer-sandbox.js';
import { PayerRegistry } from './payer-registry.service.js';

const COVERAGE = sandboxCoverage('cov-1', 'p1', 'Organization/org-1');

describe('PayerRegistry (real PostgreSQL)', () => {
  let db: ScratchDataSource;
  let registry: PayerRegistry;

  beforeAll(async () => {
    db = await openScratchDataSource(inject('adminDatabaseUrl'));
    registry = new PayerRegistry(db.dataSource, LOOPBACK_POLICY);
  });

  afterAll(async () => {
    await db?.close();
  });

  it('maps a Coverage to its registered payer by payor identifier', async () => {
    await registry.upsert({
      id: 'sandbox-payer',
      name: 'Sandbox payer',
      fhirBase: 'https://payer.example.org/fhir',
      tokenEndpoint: 'https://payer.example.org/auth/token',
      clientId: 'dtr-backend',
      signingAlg: 'ES384',
      scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
      coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER'],
    });
    expect((await registry.forCoverage(COVERAGE))?.id).toBe('sandbox-payer');
    expect(
      await registry.forCoverage({ ...COVERAGE, payor: [{ identifier: { value: 'SOMEONE-ELSE' } }] }),
    ).toBeUndefined();
    // The right value without its system, or under another system, is not this payer.
    expect(await registry.forCoverage({ ...COVERAGE, payor: [{ identifier: { value: 'SANDBOX-PAYER' } }] })).toBe(
      undefined,
    );
    expect(
      await registry.forCoverage({
        ...COVERAGE,
        payor: [{ identifier: { system: 'http://other.example.org/ids', value: 'SANDBOX-PAYER' } }],
      }),
    ).toBeUndefined();
  });

  it('refuses a bare coverage identifier, saying it must be system|value', async () => {
    const error = await registry
      .upsert({
        id: 'bare-payer',
        name: 'Bare',
        fhirBase: 'http://127.0.0.1:1/fhir',
        tokenEndpoint: 'http://127.0.0.1:1/token',
        clientId: 'c',
        signingAlg: 'ES384',
        scopes: ['system/Questionnaire.rs'],
        coverageIdentifiers: ['http://example.org/payer-id|OK', 'ACME'],
      })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringMatching(/^coverageIdentifiers\.1: each must be system\|value/),
    });
    expect(await registry.get('bare-payer')).toBeUndefined();
  });

  it('refuses to register a payer over plain http outside loopback, naming the field', async () => {
    await expect(
      new PayerRegistry(db.dataSource, { allowInsecureLoopback: false }).upsert({
        id: 'x',
        name: 'x',
        fhirBase: 'http://payer.example.org/fhir',
        tokenEndpoint: 'https://payer.example.org/token',
        clientId: 'c',
        signingAlg: 'RS384',
        scopes: ['system/Questionnaire.rs'],
      }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/^fhirBase: /) });
  });

  it('takes tokenSource launch (default backend-services), and refuses it where launch tokens are not allowed', async () => {
    const base = {
      name: 'Harness',
      tokenEndpoint: 'http://127.0.0.1:9/token',
      clientId: 'c',
      signingAlg: 'RS384',
      scopes: ['system/Questionnaire.rs'],
    };
    const plain = await registry.upsert({ ...base, id: 'plain-payer', fhirBase: 'http://127.0.0.1:9/plain/fhir' });
    expect(plain.tokenSource).toBe('backend-services');
    const harness = await registry.upsert({
      ...base,
      id: 'harness-payer',
      fhirBase: 'http://127.0.0.1:9/harness/fhir',
      tokenSource: 'launch',
    });
    expect((await registry.get(harness.id))?.tokenSource).toBe('launch');
    const production = new PayerRegistry(db.dataSource, LOOPBACK_POLICY, undefined, false);
    await expect(
      production.upsert({
        ...base,
        id: 'refused-payer',
        fhirBase: 'http://127.0.0.1:9/refused/fhir',
        tokenSource: 'launch',
      }),
    ).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringMatching(/DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER/),
    });
    expect(await registry.get('refused-payer')).toBeUndefined();
    await expect(
      registry.upsert({ ...base, id: 'bad', fhirBase: 'http://127.0.0.1:9/b/fhir', tokenSource: 'ehr' }),
    ).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
  });
});
