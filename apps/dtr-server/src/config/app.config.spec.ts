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

  it('treats empty values as unset', () => {
    expect(loadAppConfig({ DATABASE_URL: '', DTR_PORT: '' }).databaseUrl).toBeUndefined();
  });
});
