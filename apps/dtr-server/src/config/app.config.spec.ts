import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadAppConfig } from './app.config.js';

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadAppConfig(env);
    return [];
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
}

const KEY = Buffer.alloc(32, 7).toString('base64');

describe('loadAppConfig', () => {
  it('gives working development defaults with nothing configured', () => {
    const config = loadAppConfig({});
    expect(config.profile).toBe('development');
    expect(config.host).toBe('127.0.0.1');
    expect(config.port).toBe(3000);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.encryptionKeys).toBeUndefined();
  });

  it('names the setting when a value is malformed', () => {
    expect(problemsOf({ DTR_PORT: 'eighty' })).toEqual([expect.stringMatching(/^DTR_PORT: /)]);
    expect(problemsOf({ DTR_PORT: '70000' })).toEqual([expect.stringMatching(/^DTR_PORT: /)]);
    expect(problemsOf({ DATABASE_URL: 'mysql://x' })).toEqual([expect.stringMatching(/^DATABASE_URL: .*postgres/)]);
    expect(problemsOf({ DTR_LOG_LEVEL: 'chatty' })).toEqual([expect.stringMatching(/^DTR_LOG_LEVEL: /)]);
    expect(problemsOf({ DTR_ENCRYPTION_KEYS: 'k1:short' })).toEqual([
      expect.stringMatching(/^DTR_ENCRYPTION_KEYS: .*32 random bytes/),
    ]);
  });

  it('reports every problem at once, not just the first', () => {
    expect(problemsOf({ DTR_PORT: 'x', DTR_PROFILE: 'staging' })).toHaveLength(2);
  });

  it('defaults no secret and nothing public-facing in production', () => {
    const problems = problemsOf({ DTR_PROFILE: 'production' });
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^DTR_PUBLIC_URL: is required/),
        expect.stringMatching(/^DTR_ENCRYPTION_KEYS: is required/),
        expect.stringMatching(/^DATABASE_URL: is required/),
      ]),
    );
    expect(
      problemsOf({
        DTR_PROFILE: 'production',
        DTR_PUBLIC_URL: 'http://dtr.example.org',
        DTR_ENCRYPTION_KEYS: `k1:${KEY}`,
        DATABASE_URL: 'postgres://db/dtr',
      }),
    ).toEqual([expect.stringMatching(/^DTR_PUBLIC_URL: must be an https/)]);
  });

  it('accepts a complete production configuration and parses the key ring in order', () => {
    const other = Buffer.alloc(32, 9).toString('base64');
    const config = loadAppConfig({
      DTR_PROFILE: 'production',
      DTR_PUBLIC_URL: 'https://dtr.example.org/',
      DTR_ENCRYPTION_KEYS: `2026b:${KEY},2026a:${other}`,
      DATABASE_URL: 'postgres://dtr@db:5432/dtr',
      DTR_PORT: '8080',
    });
    expect(config.publicUrl).toBe('https://dtr.example.org');
    expect([...config.encryptionKeys!.keys()]).toEqual(['2026b', '2026a']);
    expect(config.port).toBe(8080);
  });

  it('lets a payer receive the launch token outside production, and in production only when explicitly allowed', () => {
    const production = {
      DTR_PROFILE: 'production',
      DTR_PUBLIC_URL: 'https://dtr.example.org/',
      DTR_ENCRYPTION_KEYS: `k:${KEY}`,
      DATABASE_URL: 'postgres://dtr@db:5432/dtr',
    };
    expect(loadAppConfig({}).allowLaunchTokenForPayer).toBe(true);
    expect(loadAppConfig(production).allowLaunchTokenForPayer).toBe(false);
    expect(loadAppConfig({ ...production, DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER: 'true' }).allowLaunchTokenForPayer).toBe(
      true,
    );
    expect(problemsOf({ DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER: 'maybe' })).toEqual([
      expect.stringMatching(/^DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER: /),
    ]);
  });

  it('sizes the prefill pool to the cores unless told, and accepts 0 (in-thread)', () => {
    expect(loadAppConfig({}).prefillWorkers).toBe(availableParallelism());
    expect(loadAppConfig({ DTR_PREFILL_WORKERS: '0' }).prefillWorkers).toBe(0);
    expect(loadAppConfig({ DTR_PREFILL_WORKERS: '3' }).prefillWorkers).toBe(3);
    for (const bad of ['-1', 'two', '1.5', '65'])
      expect(problemsOf({ DTR_PREFILL_WORKERS: bad })).toEqual([
        expect.stringMatching(/^DTR_PREFILL_WORKERS: .*worker threads/),
      ]);
  });

  it('refuses a non-loopback host when no profile is given, with a message saying what to do', () => {
    for (const host of ['0.0.0.0', '10.1.2.3', '::', 'dtr.example.org'])
      expect(problemsOf({ DTR_HOST: host })).toEqual([
        expect.stringMatching(/^DTR_HOST: .*not a loopback address.*DTR_PROFILE=production/),
      ]);
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]'])
      expect(loadAppConfig({ DTR_HOST: host }).host).toBe(host);
    const production = loadAppConfig({
      DTR_PROFILE: 'production',
      DTR_HOST: '0.0.0.0',
      DTR_PUBLIC_URL: 'https://dtr.example.org',
      DTR_ENCRYPTION_KEYS: `k1:${KEY}`,
      DATABASE_URL: 'postgres://db/dtr',
    });
    expect(production.host).toBe('0.0.0.0');
    expect(production.docs).toBe(false);
  });

  it('serves /docs outside production, and in production only when DTR_DOCS says so', () => {
    expect(loadAppConfig({}).docs).toBe(true);
    expect(loadAppConfig({ DTR_DOCS: 'false' }).docs).toBe(false);
    const production = {
      DTR_PROFILE: 'production',
      DTR_PUBLIC_URL: 'https://dtr.example.org',
      DTR_ENCRYPTION_KEYS: `k1:${KEY}`,
      DATABASE_URL: 'postgres://db/dtr',
    };
    expect(loadAppConfig(production).docs).toBe(false);
    expect(loadAppConfig({ ...production, DTR_DOCS: 'true' }).docs).toBe(true);
  });

  it('reads the idle timeout, launch limit and retention windows, and keeps audit for at least a year', () => {
    const config = loadAppConfig({});
    expect(config.sessionIdleMs).toBe(30 * 60_000);
    expect(config.launchRateLimit).toEqual({ max: 120, windowMs: 60_000 });
    expect(config.retention.auditMs).toBe(2192 * 24 * 60 * 60_000);
    expect(loadAppConfig({ DTR_RETENTION_DRAFT_DAYS: '3' }).retention.draftMs).toBe(3 * 24 * 60 * 60_000);
    expect(problemsOf({ DTR_RETENTION_AUDIT_DAYS: '30' })).toEqual([
      expect.stringMatching(/^DTR_RETENTION_AUDIT_DAYS: must be at least 365/),
    ]);
    expect(problemsOf({ DTR_SESSION_IDLE_MINUTES: '0' })).toEqual([
      expect.stringMatching(/^DTR_SESSION_IDLE_MINUTES: must be a positive integer/),
    ]);
  });

  it('bounds the payer logic by default and refuses in-thread prefill (no bounds) in production', () => {
    expect(loadAppConfig({}).prefillLimits).toEqual({
      deadlineMs: 5_000,
      queueMax: 32,
      workerMemoryMb: 512,
      workerStackMb: 4,
    });
    expect(loadAppConfig({}).cqlCompile).toEqual({ deadlineMs: 30_000, maxBytes: 1024 * 1024 });
    expect(
      loadAppConfig({ DTR_PREFILL_DEADLINE_MS: '1500', DTR_PREFILL_QUEUE_MAX: '3', DTR_CQL_MAX_BYTES: '2048' }),
    ).toMatchObject({ prefillLimits: { deadlineMs: 1500, queueMax: 3 }, cqlCompile: { maxBytes: 2048 } });
    expect(problemsOf({ DTR_PREFILL_DEADLINE_MS: '0', DTR_PREFILL_WORKER_MEMORY_MB: '8' })).toEqual([
      expect.stringMatching(/^DTR_PREFILL_DEADLINE_MS: /),
      expect.stringMatching(/^DTR_PREFILL_WORKER_MEMORY_MB: /),
    ]);
    const production = {
      DTR_PROFILE: 'production',
      DTR_PUBLIC_URL: 'https://dtr.example.org',
      DTR_ENCRYPTION_KEYS: `k1:${KEY}`,
      DATABASE_URL: 'postgres://db/dtr',
    };
    expect(problemsOf({ ...production, DTR_PREFILL_WORKERS: '0' })).toEqual([
      expect.stringMatching(/^DTR_PREFILL_WORKERS: must be 1 or more in the production profile/),
    ]);
    expect(loadAppConfig({ ...production, DTR_PREFILL_WORKERS: '1' }).prefillWorkers).toBe(1);
    expect(loadAppConfig({ DTR_PROFILE: 'sandbox', DTR_PREFILL_WORKERS: '0' }).prefillWorkers).toBe(0);
  });

  it('treats empty values as unset', () => {
    expect(loadAppConfig({ DATABASE_URL: '', DTR_PORT: '' }).databaseUrl).toBeUndefined();
  });
});
