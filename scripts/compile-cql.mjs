#!/usr/bin/env node
// Compiles CQL files to ELM JSON with @cqframework/cql, writing `<name>.json` beside each `<name>.cql`.
// Usage: node scripts/compile-cql.mjs <file.cql>...
// Libraries included by a file are looked up as `<Name>.cql` in the same folder.
// Model infos: System from apps/sandbox/fixtures/cql/system-modelinfo.xml (the package ships none);
// FHIR 4.0.1 from cql-exec-fhir's copy.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import {
  CqlTranslator,
  LibraryManager,
  ModelManager,
  createLibrarySourceProvider,
  createModelInfoProvider,
  createUcumService,
  stringAsSource,
} from '@cqframework/cql/cql-to-elm';

const root = path.resolve(import.meta.dirname, '..');
const require = createRequire(import.meta.url);
const fhirModelInfoDir = path.join(path.dirname(require.resolve('cql-exec-fhir')), 'modelInfos');

const modelInfoFiles = {
  System: path.join(root, 'apps/sandbox/fixtures/cql/system-modelinfo.xml'),
  FHIR: path.join(fhirModelInfoDir, 'fhir-modelinfo-4.0.1.xml'),
};

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node scripts/compile-cql.mjs <file.cql>...');
  process.exit(2);
}

// Unit conversion is not needed for the fixtures; the translator only validates unit strings.
const ucum = createUcumService(
  (value) => value,
  () => null,
  (a) => a,
  (a) => a,
);

let failed = false;
for (const file of files) {
  const dir = path.dirname(path.resolve(file));
  const modelManager = new ModelManager();
  modelManager.modelInfoLoader.registerModelInfoProvider(
    createModelInfoProvider((name) => {
      const f = modelInfoFiles[name];
      return f ? stringAsSource(readFileSync(f, 'utf8')) : null;
    }),
  );
  const libraryManager = new LibraryManager(modelManager, undefined, undefined, ucum);
  libraryManager.librarySourceLoader.registerProvider(
    createLibrarySourceProvider((name) => {
      const f = path.join(dir, `${name}.cql`);
      return existsSync(f) ? stringAsSource(readFileSync(f, 'utf8')) : null;
    }),
  );
  const translator = CqlTranslator.fromText(readFileSync(file, 'utf8'), libraryManager);
  const errors = Array.from(translator.errors.asJsReadonlyArrayView());
  for (const e of errors) console.error(`${file}: ${e.message}`);
  if (errors.length > 0) {
    failed = true;
    continue;
  }
  const out = file.replace(/\.cql$/, '') + '.json';
  writeFileSync(out, JSON.stringify(JSON.parse(translator.toJson()), null, 2) + '\n');
  console.log(`${file} -> ${out}`);
}
process.exit(failed ? 1 : 0);
