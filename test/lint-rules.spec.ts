import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ESLint } from 'eslint';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './support/processes.js';

/** The lint rules the house style names cannot be switched off quietly: each fires on a scratch project. */
describe('npm run lint: ESLint rules', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dtr-lint-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reports a floating promise, an unused variable, an import cycle and a 101-line function', async () => {
    const tsconfig = { compilerOptions: { strict: true, module: 'nodenext', target: 'ES2023' }, include: ['*.ts'] };
    writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
    writeFileSync(path.join(dir, 'a.ts'), "import { b } from './b.js';\nexport const a = () => b;\n");
    writeFileSync(path.join(dir, 'b.ts'), "import { a } from './a.js';\nexport const b = () => a;\n");
    const body = Array.from({ length: 101 }, (_, i) => `  const v${i} = ${i}; void v${i};`).join('\n');
    writeFileSync(
      path.join(dir, 'c.ts'),
      `export async function work(): Promise<number> { return 1; }\n` +
        `export function caller(): void {\n  work();\n  const unused = 2;\n}\n` +
        `export function long(): void {\n${body}\n}\n`,
    );
    const { houseConfig } = (await import(path.join(repoRoot, 'eslint.config.mjs'))) as {
      houseConfig: (root: string) => ESLint.Options['overrideConfig'];
    };
    const eslint = new ESLint({ cwd: dir, overrideConfigFile: true, overrideConfig: houseConfig(dir) });
    const results = await eslint.lintFiles(['*.ts']);
    const rules = results.flatMap((r) => r.messages.map((m) => `${path.basename(r.filePath)} ${m.ruleId}`));
    expect(rules).toEqual(
      expect.arrayContaining([
        'c.ts @typescript-eslint/no-floating-promises',
        'c.ts @typescript-eslint/no-unused-vars',
        'c.ts max-lines-per-function',
        'a.ts import-x/no-cycle',
      ]),
    );
  });

  it('applies those rules to the project sources, and lifts only the function length for tests', async () => {
    const eslint = new ESLint({ cwd: repoRoot });
    const source = (await eslint.calculateConfigForFile('libs/smart/src/hashing.ts')) as {
      rules: Record<string, unknown[]>;
    };
    for (const rule of [
      '@typescript-eslint/no-floating-promises',
      '@typescript-eslint/no-unused-vars',
      'import-x/no-cycle',
      'max-lines-per-function',
    ])
      expect(source.rules[rule]?.[0], rule).toBe(2);
    const test = (await eslint.calculateConfigForFile('test/lint-rules.spec.ts')) as {
      rules: Record<string, unknown[]>;
    };
    expect(test.rules['max-lines-per-function']?.[0]).toBe(0);
    expect(test.rules['@typescript-eslint/no-floating-promises']?.[0]).toBe(2);
  });
});
