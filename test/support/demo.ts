import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createScratchDatabase, type ScratchDatabase } from './databases.js';
import { repoRoot, spawnServer, type SpawnedServer } from './processes.js';

export interface RunningDemo {
  db: ScratchDatabase;
  app: SpawnedServer;
  /** The DTR server's base URL (its ready line). */
  url: string;
  /** The sandbox EHR's FHIR base: the `iss` of its launches. */
  fhirBase: string;
  /** The sandbox EHR's origin, where its `/_sandbox/...` controls are. */
  ehr: string;
  /** The sandbox payer's origin, where its `/_sandbox/...` controls are. */
  payer: string;
  /** The sandbox EHR page `npm start` prints. */
  demoUrl: string;
  /** The sandbox payer's FHIR base, as printed. */
  payerFhirBase: string;
  /** The folder of the patients and packages written for this run (removed by `stop`), when any were given. */
  dir?: string;
  stop(): Promise<void>;
}

/**
 * What the sandbox serves besides its own fixtures: a patients Bundle for its EHR (`SANDBOX_BUNDLES`) and payer
 * packages (`SANDBOX_PACKAGE_DIRS`), each a folder of `<file name>.json` files (a `rules` file maps order codes to
 * questionnaires, see {@link hcpcsRules}).
 */
export interface SandboxContent {
  bundle?: unknown;
  packages?: Record<string, Record<string, unknown>>;
}

/** A sandbox payer's `rules` file: each HCPCS order code answered with a questionnaire (`canonical|version`). */
export function hcpcsRules(...rules: Array<{ code: string; questionnaire: string; description?: string }>) {
  return {
    rules: rules.map(({ code, questionnaire, description }) => ({
      ...(description === undefined ? {} : { description }),
      codes: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code }],
      questionnaires: [questionnaire],
    })),
  };
}

/**
 * One sandbox payer package per entry of `orders` (name → [order id, HCPCS code, Questionnaire]): the Questionnaire,
 * answered for that code (`url|1.0.0`).
 */
export function packagesPerOrder(
  orders: Record<string, readonly [string, string, { url: string }]>,
): Record<string, Record<string, unknown>> {
  return Object.fromEntries(
    Object.entries(orders).map(([name, [, code, content]]) => [
      name,
      { Questionnaire: content, rules: hcpcsRules({ description: name, code, questionnaire: `${content.url}|1.0.0` }) },
    ]),
  );
}

/** Writes the content into a new temporary folder; returns the folder and the sandbox settings that point at it. */
function writeSandboxContent(prefix: string, content: SandboxContent, env: Record<string, string>) {
  const dir = mkdtempSync(path.join(tmpdir(), `${prefix}-`));
  const settings: Record<string, string> = {};
  if (content.bundle !== undefined) {
    writeFileSync(path.join(dir, 'patients.json'), JSON.stringify(content.bundle));
    settings['SANDBOX_BUNDLES'] = path.join(dir, 'patients.json');
  }
  const folders = Object.entries(content.packages ?? {}).map(([name, files]) => {
    const folder = path.join(dir, name);
    mkdirSync(folder);
    for (const [file, json] of Object.entries(files))
      writeFileSync(path.join(folder, `${file}.json`), JSON.stringify(json));
    return folder;
  });
  if (folders.length > 0)
    settings['SANDBOX_PACKAGE_DIRS'] = [env['SANDBOX_PACKAGE_DIRS'], ...folders].filter(Boolean).join(',');
  return { dir, settings };
}

/** The URL the start-up banner printed where `pattern` says (a clear failure when it never did). */
function printed(app: SpawnedServer, pattern: RegExp): string {
  const found = pattern.exec(app.output())?.[1];
  if (!found) throw new Error(`the sandbox never printed ${pattern.source}:\n${app.output()}`);
  return found;
}

/**
 * `npm start` (scripts/start.mjs) on a scratch database, every port picked free, `env` added to its environment, and
 * `content` (patients, packages) written to a temporary folder for the sandbox to serve. Resolves once the server is
 * ready and the sandbox has printed its banner; anything started is stopped again when it does not get that far.
 */
export async function startDemo(
  adminDatabaseUrl: string,
  prefix: string,
  env: Record<string, string> = {},
  content: SandboxContent = {},
): Promise<RunningDemo> {
  const db = await createScratchDatabase(adminDatabaseUrl, prefix);
  const written =
    content.bundle !== undefined || content.packages
      ? writeSandboxContent(prefix.replaceAll('_', '-'), content, env)
      : undefined;
  const app = spawnServer(
    {
      DATABASE_URL: db.url,
      DTR_PORT: '0',
      SANDBOX_EHR_PORT: '0',
      SANDBOX_PAYER_PORT: '0',
      ...env,
      ...written?.settings,
    },
    'scripts/start.mjs',
  );
  const stop = async () => {
    if (app.child.exitCode === null && app.child.signalCode === null) {
      app.child.kill('SIGTERM');
      await app.exited;
    }
    await db.drop();
    if (written) rmSync(written.dir, { recursive: true, force: true });
  };
  try {
    const url = await app.ready;
    const deadline = Date.now() + 30_000;
    while (!/Open (http:\/\/\S+) to try it/.test(app.output()) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    const fhirBase = printed(app, /Sandbox EHR: (http:\/\/\S+)/);
    const payerFhirBase = printed(app, /Sandbox payer: (http:\/\/\S+)/);
    return {
      db,
      app,
      url,
      fhirBase,
      ehr: new URL(fhirBase).origin,
      payer: new URL(payerFhirBase).origin,
      demoUrl: printed(app, /Open (http:\/\/\S+) to try it/),
      payerFhirBase,
      ...(written ? { dir: written.dir } : {}),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * Puts a payer registration with the CLI (`dtr payer put --file`), as an operator would, on the given database;
 * a refusal fails with what the CLI said.
 */
export function putPayerWithCli(databaseUrl: string, payer: Record<string, unknown>): void {
  const dir = mkdtempSync(path.join(tmpdir(), 'dtr-payer-put-'));
  try {
    const file = path.join(dir, 'payer.json');
    writeFileSync(file, JSON.stringify(payer));
    try {
      execFileSync(process.execPath, [path.join(repoRoot, 'bin/dtr.mjs'), 'payer', 'put', '--file', file], {
        env: { ...process.env, DATABASE_URL: databaseUrl },
        stdio: 'pipe',
      });
    } catch (error) {
      throw new Error(`dtr payer put failed: ${String((error as { stderr?: Buffer }).stderr ?? error)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
