#!/usr/bin/env node
// `npx dtr …` from the repository root: builds dist/ when it is missing, then runs the CLI.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const entry = path.join(root, 'dist', 'apps', 'dtr-server', 'src', 'cli', 'main.js');
if (!existsSync(entry) || process.env.DTR_REBUILD === '1') {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
}
await import(pathToFileURL(entry).href);
