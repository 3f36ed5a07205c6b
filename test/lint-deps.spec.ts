import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const script = path.resolve(import.meta.dirname, '..', 'scripts', 'lint-deps.mjs');

function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lint-deps-'));
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  }
  return dir;
}

function lint(dir: string): { ok: boolean; output: string } {
  try {
    execFileSync(process.execPath, [script, dir], { stdio: 'pipe' });
    return { ok: true, output: '' };
  } catch (error) {
    return { ok: false, output: String((error as { stderr: Buffer }).stderr) };
  }
}

describe('dependency-direction lint rule', () => {
  const dirs: string[] = [];
  afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('accepts the allowed directions', () => {
    const dir = tree({
      'libs/kernel/src/index.ts': `export const x = 1;`,
      'libs/persistence/src/index.ts': `import { x } from '@dtr/kernel';\nimport { DataSource } from 'typeorm';`,
      'libs/smart/src/vault.ts': `import { x } from '@dtr/kernel';\nimport { y } from './y.js';`,
      'apps/dtr-server/src/main.ts': `import { x } from '@dtr/smart';\nimport { NestFactory } from '@nestjs/core';`,
      'libs/smart/src/vault.int-spec.ts': `import { db } from '../../../test/support/databases.js';`,
    });
    dirs.push(dir);
    expect(lint(dir)).toEqual({ ok: true, output: '' });
  });

  it('refuses upward, sideways and deep imports, each with its file and line', () => {
    const dir = tree({
      'libs/kernel/src/index.ts': `import { Injectable } from '@nestjs/common';\nimport { q } from '@dtr/persistence';`,
      'libs/persistence/src/a.ts': `import { s } from '@dtr/smart';\nexport * from '@dtr/kernel/src/dtr-error.js';`,
      'libs/prefill/src/engine.ts': `import pg from 'pg';\nimport { app } from '../../../apps/dtr-server/src/main.js';`,
      'apps/dtr-server/src/x.ts': `import { sandbox } from '../../sandbox/src/index.js';`,
    });
    dirs.push(dir);
    const result = lint(dir);
    expect(result.ok).toBe(false);
    expect(result.output).toContain('libs/kernel/src/index.ts:1: libs/kernel is pure');
    expect(result.output).toContain('libs/kernel/src/index.ts:2: libs/kernel may not depend on libs/persistence');
    expect(result.output).toContain('libs/persistence/src/a.ts:1: libs/persistence may not depend on libs/smart');
    expect(result.output).toContain('libs/persistence/src/a.ts:2: import libs through their entry only');
    expect(result.output).toContain('libs/prefill/src/engine.ts:1: libs/prefill is pure');
    expect(result.output).toContain('libs/prefill/src/engine.ts:2: relative import leaves libs/prefill');
    expect(result.output).toContain('apps/dtr-server/src/x.ts:1: relative import leaves apps/dtr-server');
  });
});
