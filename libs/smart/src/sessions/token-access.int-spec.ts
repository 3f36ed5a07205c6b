import { FixedClock } from '@dtr/kernel';
import { createDataSource } from '@dtr/persistence';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { KeyRingSecretBox } from '../key-ring-secret-box.js';
import { TenantRegistry } from '../tenants/tenant-registry.service.js';
import { SessionStore, type StoredToken } from './session-store.js';
import { TokenAccess } from './token-access.js';

describe('SessionStore and TokenAccess (real PostgreSQL)', () => {
  let dataSource: DataSource;
  const clock = new FixedClock(new Date('2026-11-22T10:00:00Z'));
  const secrets = new KeyRingSecretBox(new Map([['test', randomBytes(32)]]));
  let store: SessionStore;
  const tenantId = `vault-${Math.random().toString(36).slice(2, 8)}`;

  beforeAll(async () => {
    dataSource = createDataSource({
      url: inject('databaseUrl'),
      poolMax: 20,
    });
    await dataSource.initialize();
    await new TenantRegistry(dataSource, secrets, { allowInsecureLoopback: false }).upsert({
      id: tenantId,
      name: 'Vault test EHR',
      fhirBase: `https://${tenantId}.example.org/fhir`,
      discloseMode: 'user-delegated',
      singleClient: true,
      supplement: {
        clientId: 'c',
        authMethod: 'client_secret_basic',
        clientSecret: 'secret-secret',
        scopes: ['launch', 'user/QuestionnaireResponse.cu'],
        redirectUri: 'https://dtr.example.org/callback',
      },
    });
    store = new SessionStore(dataSource, secrets, clock);
  });
  afterAll(async () => {
    await dataSource?.destroy();
  });

  async function newSession(accessToken: string, expiresInMs: number, refreshToken?: string) {
    return store.create(
      {
        tenantId,
        fhirBase: `https://${tenantId}.example.org/fhir`,
        patient: 'pat-1',
        encounter: null,
        fhirUser: 'Practitioner/pr-1',
        context: { patient: 'pat-1', fhirContext: [] },
        ttlMs: 3_600_000,
      },
      {
        purpose: 'supplement',
        tokenEndpoint: 'https://ehr.example.org/token',
        clientId: 'c',
        accessToken,
        ...(refreshToken ? { refreshToken } : {}),
        idToken: 'id.token.value',
        scope: 'launch patient/*.rs',
        expiresAt: new Date(clock.now().getTime() + expiresInMs),
      },
    );
  }

  it('keeps tokens only as ciphertext in the database', async () => {
    const { sessionId } = await newSession('AT-plaintext-1234567890', 600_000, 'RT-plaintext-0987654321');
    const client = new pg.Client({ connectionString: inject('databaseUrl') });
    await client.connect();
    try {
      const dump =
        JSON.stringify((await client.query('SELECT * FROM session_token')).rows) +
        JSON.stringify((await client.query('SELECT * FROM app_session')).rows);
      expect(dump).not.toContain('AT-plaintext');
      expect(dump).not.toContain('RT-plaintext');
      expect(dump).not.toContain('id.token.value');
      expect(dump).not.toContain(sessionId);
    } finally {
      await client.end();
    }
  });

  it('finds a live session by its cookie value only, and not after revocation or expiry', async () => {
    const { sessionId, record } = await newSession('AT-2', 600_000);
    expect((await store.find(sessionId))?.patient).toBe('pat-1');
    expect(await store.find(`${sessionId}x`)).toBeUndefined();
    await store.revoke(record.idHash);
    expect(await store.find(sessionId)).toBeUndefined();
    const other = await newSession('AT-3', 600_000);
    clock.advance(3_600_001);
    expect(await store.find(other.sessionId)).toBeUndefined();
    clock.advance(-3_600_001);
  });

  const tokenRows = async (idHash: string) =>
    Number(
      (
        (await dataSource.query(`SELECT count(*)::int AS n FROM session_token WHERE session_id_hash = $1`, [
          idHash,
        ])) as Array<{ n: number }>
      )[0]!.n,
    );

  it('ends a session unused for the idle timeout (default 30 minutes) while its lifetime runs on; its tokens go', async () => {
    const { sessionId, record } = await newSession('AT-idle', 600_000, 'RT-idle');
    clock.advance(29 * 60_000);
    // Used within the idle timeout: live, and the use restarts the idle clock.
    expect(await store.find(sessionId)).toBeDefined();
    clock.advance(29 * 60_000);
    expect(await store.find(sessionId)).toBeDefined();
    expect(await tokenRows(record.idHash)).toBe(1);
    clock.advance(30 * 60_000 + 1);
    expect(await store.find(sessionId)).toBeUndefined();
    // Presenting the idle session deleted its tokens (ciphertexts gone, not only unusable).
    expect(await tokenRows(record.idHash)).toBe(0);
    // It stays ended when used again.
    clock.advance(-(88 * 60_000 + 1));
    expect(await store.find(sessionId)).toBeUndefined();

    const shortIdle = new SessionStore(dataSource, secrets, clock, { idleMs: 60_000 });
    const other = await newSession('AT-idle-2', 600_000);
    clock.advance(61_000);
    expect(await shortIdle.find(other.sessionId)).toBeUndefined();
    expect(await store.find(other.sessionId)).toBeUndefined();
    clock.advance(-61_000);
  });

  it('deletes the tokens when a session is revoked (logout), not only marks them', async () => {
    const { record } = await newSession('AT-out', 600_000, 'RT-out');
    expect(await tokenRows(record.idHash)).toBe(1);
    await store.revoke(record.idHash);
    expect(await tokenRows(record.idHash)).toBe(0);
    expect(await store.getToken(record.idHash, 'supplement')).toBeUndefined();
  });

  it('gives a token with the tenant of its session (the registration a refresh uses)', async () => {
    const { record } = await newSession('AT-tenant', 600_000);
    expect((await store.getToken(record.idHash, 'supplement'))?.tenantId).toBe(tenantId);
  });

  it('refreshes once for 50 concurrent callers of an expired token, and stores the newest refresh token', async () => {
    const { record } = await newSession('AT-old', -1000, 'RT-1');
    let calls = 0;
    const refresher = async (token: StoredToken) => {
      calls++;
      expect(token.refreshToken).toBe('RT-1');
      await new Promise((r) => setTimeout(r, 50));
      return {
        accessToken: 'AT-new',
        refreshToken: 'RT-2',
        scope: token.scope,
        expiresAt: new Date(clock.now().getTime() + 300_000),
      };
    };
    const access = new TokenAccess(store, refresher, clock);
    const results = await Promise.all(Array.from({ length: 50 }, () => access.get(record.idHash, 'supplement')));
    expect(calls).toBe(1);
    expect(new Set(results.map((r) => r.accessToken))).toEqual(new Set(['AT-new']));
    const stored = await store.getToken(record.idHash, 'supplement');
    expect(stored).toMatchObject({ refreshToken: 'RT-2', refreshedCount: 1 });

    // A second process (another TokenAccess) finds the row fresh after waiting on the lock: no second refresh.
    const another = new TokenAccess(store, refresher, clock);
    await another.get(record.idHash, 'supplement');
    expect(calls).toBe(1);
  });

  it('two instances (separate pools) contending for one expired token: one refresh at the EHR, both get it', async () => {
    const { record } = await newSession('AT-contended', -1000, 'RT-c1');
    const second = createDataSource({
      url: inject('databaseUrl'),
      poolMax: 2,
    });
    await second.initialize();
    try {
      const events: string[] = [];
      let calls = 0;
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const refresher = (instance: string) => async (token: StoredToken) => {
        calls++;
        events.push(`${instance} refreshes with ${token.refreshToken}`);
        // The first refresher holds the row lock until the other instance has asked too.
        await held;
        return {
          accessToken: `AT-from-${instance}`,
          refreshToken: 'RT-c2',
          scope: token.scope,
          expiresAt: new Date(clock.now().getTime() + 300_000),
        };
      };
      const a = new TokenAccess(store, refresher('a'), clock);
      const bStore = new SessionStore(second, secrets, clock);
      let bSawExpired!: () => void;
      const bRead = new Promise<void>((resolve) => (bSawExpired = resolve));
      const read = bStore.getToken.bind(bStore);
      bStore.getToken = async (...args: Parameters<SessionStore['getToken']>) => {
        const token = await read(...args);
        if (token && token.expiresAt < clock.now()) bSawExpired();
        return token;
      };
      const b = new TokenAccess(bStore, refresher('b'), clock);
      const first = a.get(record.idHash, 'supplement');
      // Both instances are inside the refresh path at once: b reads the expired token while a's refresh is in flight.
      while (calls === 0) await new Promise((r) => setTimeout(r, 5));
      const other = b.get(record.idHash, 'supplement');
      await bRead;
      await new Promise((r) => setTimeout(r, 100));
      events.push('b waited');
      release();
      const [fromA, fromB] = await Promise.all([first, other]);
      expect(calls).toBe(1);
      expect(events).toEqual(['a refreshes with RT-c1', 'b waited']);
      expect(fromA.accessToken).toBe('AT-from-a');
      expect(fromB.accessToken).toBe('AT-from-a');
      expect(await store.getToken(record.idHash, 'supplement')).toMatchObject({
        refreshToken: 'RT-c2',
        refreshedCount: 1,
      });
    } finally {
      await second.destroy();
    }
  });

  it('keeps the old refresh token when the server does not rotate it, and refuses when none is left', async () => {
    const { record } = await newSession('AT-a', -1000, 'RT-keep');
    const access = new TokenAccess(
      store,
      async () => ({ accessToken: 'AT-b', scope: 's', expiresAt: new Date(clock.now().getTime() + 1000) }),
      clock,
      0,
    );
    await access.get(record.idHash, 'supplement');
    expect((await store.getToken(record.idHash, 'supplement'))?.refreshToken).toBe('RT-keep');

    const noRefresh = await newSession('AT-c', -1000);
    await expect(access.get(noRefresh.record.idHash, 'supplement')).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    await expect(access.get(noRefresh.record.idHash, 'disclose')).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
  });

  it('refuses a ciphertext moved to another session row (AAD binds it)', async () => {
    const a = await newSession('AT-row-a', 600_000);
    const b = await newSession('AT-row-b', 600_000);
    await dataSource.query(
      `UPDATE session_token SET access_token_enc = (SELECT access_token_enc FROM session_token WHERE session_id_hash = $1) WHERE session_id_hash = $2`,
      [a.record.idHash, b.record.idHash],
    );
    await expect(store.getToken(b.record.idHash, 'supplement')).rejects.toThrow();
  });
});
