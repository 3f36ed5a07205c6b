// The lint a team runs (npm run lint): typescript-eslint with type information, import cycles, function length.
// `houseConfig(root)` is exported so test/lint-rules.spec.ts can prove, on a scratch project, that each rule fires.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import path from 'node:path';

const TESTS = ['**/*.spec.ts', '**/*.int-spec.ts', '**/*.e2e-spec.ts', 'test/**', '**/fixtures/**'];

export function houseConfig(root) {
  return tseslint.config(
    { ignores: ['dist/**', 'node_modules/**', '.data/**', 'coverage/**', '**/*.mjs', '**/*.js'] },
    {
      files: ['**/*.ts'],
      extends: [tseslint.configs.base],
      plugins: { 'import-x': importX },
      languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: root } },
      settings: {
        'import-x/extensions': ['.ts', '.js'],
        'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
        'import-x/resolver-next': [createTypeScriptImportResolver({ project: path.join(root, 'tsconfig.json') })],
      },
      rules: {
        '@typescript-eslint/no-floating-promises': 'error',
        '@typescript-eslint/no-unused-vars': [
          'error',
          { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
        ],
        'import-x/no-cycle': ['error', { ignoreExternal: true }],
        'max-lines-per-function': ['error', { max: 100, skipBlankLines: true, skipComments: true, IIFEs: true }],
      },
    },
    { files: TESTS, rules: { 'max-lines-per-function': 'off' } },
  );
}

export default houseConfig(import.meta.dirname);
