#!/usr/bin/env node
// Transpiles apps/*/src and libs/*/src to dist/ (ESM), one file at a time, and rewrites the
// `@dtr/<lib>` import aliases to relative paths so plain `node` can run the output.
// Type checking is separate (`npm run typecheck`); this keeps `npm start` fast on a fresh clone.
import { cpSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const finalRoot = path.join(root, 'dist');
// Built beside dist/ and swapped in at the end, so a running process never sees a half-written tree.
const outRoot = path.join(root, `.dist-building-${process.pid}`);
const TEST_FILE = /\.(spec|int-spec|e2e-spec)\.ts$/;

const compilerOptions = {
  target: ts.ScriptTarget.ES2023,
  module: ts.ModuleKind.ESNext,
  experimentalDecorators: true,
  emitDecoratorMetadata: true,
  useDefineForClassFields: false,
  sourceMap: true,
  esModuleInterop: true,
};

function* sourceFiles(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* sourceFiles(full);
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') && !TEST_FILE.test(entry.name)) yield full;
  }
}

function roots() {
  const result = [];
  for (const group of ['apps', 'libs']) {
    const groupDir = path.join(root, group);
    for (const name of readdirSync(groupDir)) {
      const src = path.join(groupDir, name, 'src');
      try {
        if (statSync(src).isDirectory()) result.push(src);
      } catch {
        // a folder without src/ is not a project
      }
    }
  }
  return result;
}

const libEntry = (name) => path.join(outRoot, 'libs', name, 'src', 'index.js');

function rewriteAliases(code, outFile) {
  return code.replace(/(from\s+|import\s*\(\s*|import\s+)(['"])@dtr\/([a-z0-9-]+)\2/g, (_m, lead, quote, lib) => {
    let rel = path.relative(path.dirname(outFile), libEntry(lib)).split(path.sep).join('/');
    if (!rel.startsWith('.')) rel = `./${rel}`;
    return `${lead}${quote}${rel}${quote}`;
  });
}

const started = Date.now();
rmSync(outRoot, { recursive: true, force: true });
let count = 0;
const problems = [];
for (const srcRoot of roots()) {
  for (const file of sourceFiles(srcRoot)) {
    const rel = path.relative(root, file);
    const outFile = path.join(outRoot, rel.replace(/\.ts$/, '.js'));
    const result = ts.transpileModule(readFileSync(file, 'utf8'), {
      compilerOptions,
      fileName: file,
      reportDiagnostics: true,
    });
    for (const d of result.diagnostics ?? [])
      problems.push(`${rel}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
    mkdirSync(path.dirname(outFile), { recursive: true });
    writeFileSync(outFile, rewriteAliases(result.outputText, outFile));
    if (result.sourceMapText) writeFileSync(`${outFile}.map`, result.sourceMapText);
    count++;
  }
}
// The form page's static files: our own (apps/dtr-server/static) and the LHC-Forms renderer, copied from the lforms
// package (a build-time source: the server serves these files and never imports the package) under a pinned path.
const LFORMS_VERSION = JSON.parse(readFileSync(path.join(root, 'node_modules/lforms/package.json'), 'utf8')).version;
const staticOut = path.join(outRoot, 'static');
cpSync(path.join(root, 'apps/dtr-server/static'), path.join(staticOut, 'app'), { recursive: true });
const lformsDist = path.join(root, 'node_modules/lforms/dist/lforms');
for (const file of [
  'webcomponent/assets/lib/zone.min.js',
  'webcomponent/runtime.js',
  'webcomponent/polyfills.js',
  'webcomponent/main.js',
  'webcomponent/styles.css',
  'webcomponent/down_arrow_gray_10_10.png',
  'webcomponent/magnifying_glass.png',
  'fhir/R4/lformsFHIR.min.js',
]) {
  const target = path.join(staticOut, 'lforms', LFORMS_VERSION, file);
  mkdirSync(path.dirname(target), { recursive: true });
  cpSync(path.join(lformsDist, file), target);
}
if (problems.length > 0) {
  rmSync(outRoot, { recursive: true, force: true });
  console.error(problems.join('\n'));
  process.exit(1);
}
const old = `${finalRoot}.old-${process.pid}`;
try {
  renameSync(finalRoot, old);
} catch {
  // no previous build
}
renameSync(outRoot, finalRoot);
rmSync(old, { recursive: true, force: true });
// Non-TypeScript assets that ship with the apps (pages, fixtures) are read from their source folders.
console.error(`build: ${count} files in ${Date.now() - started} ms -> dist/`);
