import { defineConfig } from 'vitest/config';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const root = import.meta.dirname;

// Path aliases: exactly tsconfig.json's "paths" (one list, so the two cannot disagree).
const tsconfig = JSON.parse(readFileSync(path.join(root, 'tsconfig.json'), 'utf8')) as {
  compilerOptions: { paths: Record<string, [string]> };
};
const alias = Object.fromEntries(
  Object.entries(tsconfig.compilerOptions.paths).map(([name, [target]]) => [name, path.join(root, target)]),
);

// Nest DI needs legacy decorators with emitted metadata (see STACK.md).
const oxc = { decorator: { legacy: true, emitDecoratorMetadata: true } };

export default defineConfig({
  resolve: { alias },
  oxc,
  test: {
    // One database for the whole run, migrated once (test/global-setup.ts); used by the int and e2e tiers.
    globalSetup: ['test/global-setup.ts'],
    isolate: true,
    // CI (.ci/run) asks for a machine-readable summary beside the usual output.
    reporters: process.env['DTR_TEST_RESULTS']
      ? ['default', ['json', { outputFile: process.env['DTR_TEST_RESULTS'] }]]
      : ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['apps/**/*.spec.ts', 'libs/**/*.spec.ts', 'test/**/*.spec.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'int',
          include: ['apps/**/*.int-spec.ts', 'libs/**/*.int-spec.ts', 'test/**/*.int-spec.ts'],
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['apps/**/*.e2e-spec.ts', 'libs/**/*.e2e-spec.ts', 'test/**/*.e2e-spec.ts'],
          testTimeout: 60_000,
          hookTimeout: 90_000,
          // Servers and browsers are heavy on a 2-core machine: one e2e file at a time.
          fileParallelism: false,
        },
      },
    ],
  },
});
