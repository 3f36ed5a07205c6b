#!/usr/bin/env node
// The dependency-direction rule of the house style, enforced:
//   apps -> feature libs -> fhir / persistence -> kernel
// - a lib imports other libs only through their `@dtr/<lib>` entry, and only those its layer allows;
// - a lib never imports an app, and never reaches out of its folder with relative paths;
// - the pure libs (kernel, prefill) import no framework or database code;
// - dtr-server never imports the sandbox (dev/test only) and the sandbox never imports dtr-server.
// Test files (*.spec.ts, *.int-spec.ts, *.e2e-spec.ts) may also import test/support.
// Usage: node scripts/lint-deps.mjs [root]   (exit 1 and one line per violation)
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));

export const ALLOWED = {
  kernel: [],
  udap: ['kernel'],
  fhir: ['kernel'],
  persistence: ['kernel'],
  audit: ['kernel', 'fhir', 'persistence'],
  smart: ['kernel', 'fhir', 'persistence', 'audit', 'udap'],
  payer: ['kernel', 'fhir', 'persistence', 'audit', 'smart', 'udap'],
  prefill: ['kernel', 'fhir'],
  forms: ['kernel', 'fhir', 'persistence', 'prefill', 'audit'],
  disclosure: ['kernel', 'fhir', 'persistence', 'audit', 'forms'],
};
const PURE = new Set(['kernel', 'prefill']);
const FRAMEWORK = /^(@nestjs\/|typeorm$|pg$|express$|helmet$)/;
const TEST_FILE = /\.(spec|int-spec|e2e-spec)\.ts$/;
const IMPORT = /(?:^|[^\w.])(?:import|export)\s*(?:[^'"();]*?\sfrom\s*)?\(?\s*['"]([^'"]+)['"]/g;

function* tsFiles(dir) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules' && entry.name !== 'dist') yield* tsFiles(full);
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) yield full;
  }
}

function lineOf(text, index) {
  return text.slice(0, index).split('\n').length;
}

const violations = [];
function check(file) {
  const rel = path.relative(root, file).split(path.sep).join('/');
  const [group, owner] = rel.split('/');
  const isTest = TEST_FILE.test(rel);
  const text = readFileSync(file, 'utf8');
  for (const match of text.matchAll(IMPORT)) {
    const spec = match[1];
    const where = `${rel}:${lineOf(text, match.index + match[0].length - 1)}`;
    const fail = (why) => violations.push(`${where}: ${why} ("${spec}")`);
    if (spec.startsWith('@dtr/')) {
      const [, target, ...deep] = spec.split('/');
      if (deep.length > 0) fail(`import libs through their entry only: @dtr/${target}`);
      if (group === 'libs') {
        if (target === owner) fail('a lib imports its own files relatively, not through its alias');
        else if (!(ALLOWED[owner] ?? []).includes(target)) fail(`libs/${owner} may not depend on libs/${target}`);
      }
      continue;
    }
    if (spec.startsWith('.')) {
      const resolved = path
        .relative(root, path.resolve(path.dirname(file), spec))
        .split(path.sep)
        .join('/');
      const [tGroup, tOwner] = resolved.split('/');
      if (isTest && tGroup === 'test') continue;
      if ((group === 'libs' || group === 'apps') && (tGroup !== group || tOwner !== owner)) {
        fail(`relative import leaves ${group}/${owner}`);
      }
      continue;
    }
    if (group === 'libs' && PURE.has(owner) && FRAMEWORK.test(spec))
      fail(`libs/${owner} is pure: no framework or database imports`);
  }
}

for (const group of ['libs', 'apps']) for (const file of tsFiles(path.join(root, group))) check(file);

if (violations.length > 0) {
  console.error(violations.join('\n'));
  console.error(`lint-deps: ${violations.length} dependency-direction violation(s)`);
  process.exit(1);
}
console.error('lint-deps: dependency direction respected');
