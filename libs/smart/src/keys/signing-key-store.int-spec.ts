import { FixedClock } from '@dtr/kernel';
import { createDataSource } from '@dtr/persistence';
import { decodeProtectedHeader, importJWK, jwtVerify } from 'jose';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from '../../../../test/support/databases.js';
import { migrate } from '@dtr/persistence';
import { privateKeyJwt } from '../smart-client.js';
import { randomBytes } from 'node:crypto';
import { KeyRingSecretBox } from '../key-ring-secret-box.js';
import { SigningKeyStore } from './signing-key-store.js';

describe('SigningKeyStore (real PostgreSQL)', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  const clock = new FixedClock(new Date('2026-11-22T00:00:00Z'));
  let store: SigningKeyStore;

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_keys');
    await migrate(db.url);
    dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    store = new SigningKeyStore(dataSource, new KeyRingSecretBox(new Map([['test', randomBytes(32)]])), clock, 60_000);
  });
  afterAll(async () => {
    await dataSource?.destroy();
    await db?.drop();
  });

  it('generates RS384 and ES384 keys whose assertions verify with the published JWKS', async () => {
    const created = await store.ensureKeys();
    expect(created.map((k) => k.alg).sort()).toEqual(['ES384', 'RS384']);
    const jwks = await store.publicJwks();
    expect(jwks.keys).toHaveLength(2);
    for (const alg of ['RS384', 'ES384'] as const) {
      const { key, kid } = await store.privateKey(alg);
      const auth = privateKeyJwt(key, kid, 'https://ehr.example.org/token');
      const body = new URLSearchParams();
      await auth(
        { issuer: 'https://ehr.example.org' },
        { client_id: 'c', token_endpoint_auth_signing_alg: alg },
        body,
        new Headers(),
      );
      const assertion = body.get('client_assertion')!;
      expect(decodeProtectedHeader(assertion)).toMatchObject({ alg, kid, typ: 'JWT' });
      const published = jwks.keys.find((k) => k.kid === kid)!;
      expect(published).toMatchObject({ alg, use: 'sig' });
      await expect(jwtVerify(assertion, await importJWK(published, alg))).resolves.toBeTruthy();
    }
    expect(await store.ensureKeys()).toEqual([]);
  });

  it('never stores or publishes a private member in the clear', async () => {
    const text = JSON.stringify(await dataSource.query('SELECT * FROM client_signing_key'));
    expect(text).not.toMatch(/"d":/);
    expect(JSON.stringify(await store.publicJwks())).not.toMatch(/"(d|p|q|dp|dq|qi)":/);
  });

  it('rotation keeps the old key published until the grace period ends, and signs with the new one', async () => {
    const before = (await store.list()).find((k) => k.alg === 'ES384' && k.status === 'active')!;
    const rotated = await store.generate('ES384');
    expect(rotated.kid).not.toBe(before.kid);
    expect((await store.privateKey('ES384')).kid).toBe(rotated.kid);
    let kids = (await store.publicJwks()).keys.map((k) => k.kid);
    expect(kids).toEqual(expect.arrayContaining([before.kid, rotated.kid]));
    clock.advance(60_001);
    kids = (await store.publicJwks()).keys.map((k) => k.kid);
    expect(kids).not.toContain(before.kid);
    expect((await store.list()).find((k) => k.kid === before.kid)?.status).toBe('retired');
  });

  it('says how to fix a missing key', async () => {
    await dataSource.query(`DELETE FROM client_signing_key WHERE alg = 'RS384'`);
    await expect(
      new SigningKeyStore(dataSource, new KeyRingSecretBox(new Map([['test', randomBytes(32)]])), clock).privateKey(
        'RS384',
      ),
    ).rejects.toThrow(/dtr keys generate --alg RS384/);
  });
});
