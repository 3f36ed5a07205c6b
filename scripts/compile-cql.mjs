#!/usr/bin/env node
// Compiles CQL files to ELM JSON, writing `<name>.json` beside each `<name>.cql`, with the same translator setup the
// server uses (translateCql in libs/fhir: @cqframework/cql, FHIR 4.0.1 and the CQL System model).
// Usage: node scripts/compile-cql.mjs <file.cql>...
// Libraries included by a file are looked up as `<Name>.cql` in the same folder.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const root = path.resolve(import.meta.dirname, '..');
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node scripts/compile-cql.mjs <file.cql>...');
  process.exit(2);
}
execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
const { translateCql } = await import(pathToFileURL(path.join(root, 'dist', 'libs', 'fhir', 'src', 'index.js')).href);

let failed = false;
for (const file of files) {
  const dir = path.dirname(path.resolve(file));
  const sources = new Map(
    readdirSync(dir)
      .filter((f) => f.endsWith('.cql'))
      .map((f) => [f.slice(0, -4), readFileSync(path.join(dir, f), 'utf8')]),
  );
  const { elm, errors } = await translateCql(readFileSync(file, 'utf8'), sources);
  for (const message of errors) console.error(`${file}: ${message}`);
  if (!elm) {
    failed = true;
    continue;
  }
  const out = file.replace(/\.cql$/, '') + '.json';
  writeFileSync(out, JSON.stringify(JSON.parse(elm), null, 2) + '\n');
  console.log(`${file} -> ${out}`);
}
process.exit(failed ? 1 : 0);
