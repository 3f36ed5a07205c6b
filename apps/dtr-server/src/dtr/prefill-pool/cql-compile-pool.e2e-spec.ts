import childProcess, { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { syncBuiltinESMExports } from 'node:module';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { compileCqlOnlyLibraries, type FhirResource, QuestionnairePackage, translateCql } from '@dtr/fhir';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TRANSLATOR_EXHAUST_TEST_HOOK } from './cql-compile-protocol.js';

/**
 * The CQL translator's pool as the server runs it (the built module and worker process; the e2e tier builds dist/
 * first), with a CQL-only library of 2000 defines: the kind of library that takes the translator seconds of CPU.
 */
const root = path.resolve(import.meta.dirname, '../../../../..');
const built = path.join(root, 'dist/apps/dtr-server/src/dtr/prefill-pool/cql-compile-pool.js');
type CompilerModule = typeof import('./cql-compile-pool.js');

const DEFINES = 2000;
const HEAD = "using FHIR version '4.0.1'\ncontext Patient\n";

/** A CQL-only Library named `name` with this CQL. */
function cqlOnlyLibrary(name: string, cql: string): FhirResource {
  return {
    resourceType: 'Library',
    id: name,
    url: `http://example.org/dtr/Library/${name}`,
    version: '1.0.0',
    name,
    status: 'active',
    content: [{ contentType: 'text/cql', data: Buffer.from(cql).toString('base64') }],
  } as FhirResource;
}

/** A CQL-only Library of DEFINES defines, each building on the one before. */
function largeCqlOnlyLibrary(): FhirResource {
  const lines = ["library LargePayerLogic version '1.0.0'", HEAD, 'define "D0": 0'];
  for (let i = 1; i < DEFINES; i++) lines.push(`define "D${i}": "D${i - 1}" + ${i % 7}`);
  return cqlOnlyLibrary('LargePayerLogic', lines.join('\n'));
}

const small = (name: string) => cqlOnlyLibrary(name, `library ${name} version '1.0.0'\ndefine "Small": 1`);

/** Whether the process runs (a killed process its new parent has not reaped yet, a zombie, does not). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

async function gone(pids: number[]): Promise<number[]> {
  const deadline = Date.now() + 10_000;
  while (pids.some(running) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  return pids.filter(running);
}

describe('CqlCompilePool (built translator process)', () => {
  let Compiler: CompilerModule['CqlCompilePool'];
  let server: Server;
  let url: string;
  const library = largeCqlOnlyLibrary();

  beforeAll(async () => {
    if (!existsSync(built)) throw new Error(`${built} is missing: the e2e tier builds dist/ first (npm run test:e2e)`);
    Compiler = ((await import(pathToFileURL(built).href)) as CompilerModule).CqlCompilePool;
    server = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => {
    server?.close();
  });

  it('compiles a 2000-define CQL-only library in its own process while this thread answers other requests', async () => {
    // What the translator process is sent: the pool forks it with `fork` from node:child_process.
    const sent: unknown[] = [];
    const forked: ChildProcess[] = [];
    const fork = childProcess.fork;
    childProcess.fork = ((...args: Parameters<typeof fork>) => {
      const child = fork(...args);
      forked.push(child);
      const send = child.send.bind(child) as (...a: unknown[]) => boolean;
      child.send = ((message: unknown, ...rest: unknown[]) => {
        sent.push(message);
        return send(message, ...rest);
      }) as typeof child.send;
      return child;
    }) as typeof fork;
    syncBuiltinESMExports();
    const compiler = new Compiler({ deadlineMs: 600_000 });
    // This thread's translator loaded (as in a server that has compiled before): were the compile on this thread, it
    // would now run start to end without letting any I/O in.
    await translateCql("library Warm version '0'\nusing FHIR version '4.0.1'\ndefine X: 1");
    try {
      let settled = false;
      const compiling = compileCqlOnlyLibraries([library], { translate: compiler.translate }).finally(() => {
        settled = true;
      });
      // The event loop is free: an HTTP round trip completes while the library is still being compiled.
      await new Promise((resolve) => setTimeout(resolve, 0));
      const answered = await fetch(url);
      expect(await answered.text()).toBe('ok');
      expect(settled).toBe(false);
      const { resources, issues } = await compiling;
      expect(issues).toEqual([]);
      const compiled = QuestionnairePackage.fromResources(resources).libraries[0]!;
      const names = compiled.elm?.library.statements?.def?.map((d) => d.name) ?? [];
      expect(names).toContain('D0');
      expect(names).toContain(`D${DEFINES - 1}`);
      // One translator process, started for the library, with no environment of ours; it was sent the CQL (with the
      // package's CQL by library name, for includes) and nothing else.
      expect(forked.map((c) => c.pid)).toEqual(compiler.pids);
      const environment = readFileSync(`/proc/${forked[0]!.pid}/environ`, 'utf8').split('\0').filter(Boolean);
      expect(environment.filter((v) => !v.startsWith('NODE_CHANNEL_'))).toEqual([]);
      expect(sent).toEqual([
        {
          type: 'job',
          jobId: 0,
          payload: {
            text: expect.stringContaining('define "D1999"'),
            sources: [['LargePayerLogic', expect.stringContaining('define "D1999"')]],
          },
        },
      ]);
      // Kept between libraries: the next one goes to the same process.
      expect((await compileCqlOnlyLibraries([small('Next')], { translate: compiler.translate })).issues).toEqual([]);
      expect(forked).toHaveLength(1);
    } finally {
      childProcess.fork = fork;
      syncBuiltinESMExports();
      await compiler.close();
    }
  });

  it('stops a compile past its deadline (the library is reported, not compiled) and starts a fresh translator', async () => {
    const compiler = new Compiler({ deadlineMs: 1000 });
    try {
      const first = await compileCqlOnlyLibraries([library], { translate: compiler.translate });
      const stopped = compiler.pids;
      expect(first.resources).toEqual([library]);
      expect(first.issues).toEqual([
        expect.objectContaining({
          severity: 'error',
          code: 'cql-compile-failed',
          library: 'LargePayerLogic|1.0.0',
          message: expect.stringMatching(/the CQL did not compile within the deadline of 1000 ms/),
        }),
      ]);
      // The next library gets a new translator process (the old one was killed mid-compile).
      const second = await compileCqlOnlyLibraries([small('LargePayerLogic')], { translate: compiler.translate });
      expect(second.issues).toEqual([]);
      expect(compiler.pids).toHaveLength(1);
      expect(compiler.pids).not.toEqual(stopped);
      expect(await gone(stopped)).toEqual([]);
    } finally {
      await compiler.close();
    }
  });

  it('does not compile a library larger than the size cap, naming the cap, and starts no translator', async () => {
    const compiler = new Compiler({ deadlineMs: 600_000 });
    try {
      const { resources, issues } = await compileCqlOnlyLibraries([library], {
        translate: compiler.translate,
        maxCqlBytes: 4096,
      });
      expect(resources).toEqual([library]);
      expect(issues).toEqual([
        expect.objectContaining({
          code: 'cql-compile-failed',
          message: expect.stringMatching(/its CQL \(\d+ bytes\) is larger than the 4096 bytes this server compiles/),
        }),
      ]);
      expect(compiler.pids).toEqual([]);
    } finally {
      await compiler.close();
    }
  });

  it('a translation that grows one array past the heap limit fails that library only; the translator is replaced', async () => {
    // V8 aborts the whole process when one array outgrows a worker thread's heap limit: with a thread, this test's
    // own process would end here (exit 134).
    // Set while the translator processes start (the first with the first library, its replacement after it).
    process.env[TRANSLATOR_EXHAUST_TEST_HOOK] = '// exhaust the translator';
    const compiler = new Compiler({ deadlineMs: 120_000, memoryMb: 128 });
    try {
      const hostile = cqlOnlyLibrary(
        'Hostile',
        "library Hostile version '1.0.0'\n// exhaust the translator\ndefine X: 1",
      );
      const { resources, issues } = await compileCqlOnlyLibraries([hostile, small('Fine')], {
        translate: compiler.translate,
      });
      expect(issues).toEqual([
        expect.objectContaining({
          severity: 'error',
          code: 'cql-compile-failed',
          library: 'Hostile|1.0.0',
          message:
            'Hostile|1.0.0 ships CQL only and the translator failed: the translation needed more memory than its limit of 128 MB; the translator was restarted',
        }),
      ]);
      // The library after it was compiled by the replacement.
      expect(resources[0]).toEqual(hostile);
      expect(QuestionnairePackage.fromResources([resources[1]!]).libraries[0]!.elm).toBeDefined();
      expect(compiler.pids).toHaveLength(1);
    } finally {
      delete process.env[TRANSLATOR_EXHAUST_TEST_HOOK];
      await compiler.close();
    }
  }, 120_000);

  it('a real library that makes the translator exhaust its heap (a list literal of 50 000 numbers) is reported, not fatal', async () => {
    const compiler = new Compiler({ deadlineMs: 120_000, memoryMb: 128 });
    try {
      const numbers = Array.from({ length: 50_000 }, (_, i) => i).join(',');
      const hostile = cqlOnlyLibrary('Numbers', `library Numbers version '1.0.0'\n${HEAD}define L: {${numbers}}`);
      const { issues } = await compileCqlOnlyLibraries([hostile], { translate: compiler.translate });
      expect(issues).toEqual([
        expect.objectContaining({
          code: 'cql-compile-failed',
          message: expect.stringContaining('the translation needed more memory than its limit of 128 MB'),
        }),
      ]);
    } finally {
      await compiler.close();
    }
  }, 120_000);

  it('a process killed outright during a long translation leaves no translator process behind', async () => {
    // A process holding the pool, as the server does, killed (SIGKILL) while its translator is busy with a library
    // that takes it many seconds: the translator lets no event in meanwhile, so only its watchdog can stop it.
    const holder = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { CqlCompilePool } = await import(${JSON.stringify(built)});
        const pool = new CqlCompilePool({ deadlineMs: 600000 });
        await pool.translate("library Warm version '0'\\ndefine X: 1", new Map());
        const fields = Array.from({ length: 20000 }, (_, i) => 'f' + i + ': ' + i).join(',');
        void pool.translate("library Slow version '1'\\ndefine T: Tuple{" + fields + "}", new Map());
        setTimeout(() => console.log(JSON.stringify(pool.pids)), 500);
        setInterval(() => undefined, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const line = await new Promise<string>((resolve) =>
      holder.stdout!.once('data', (chunk: Buffer) => resolve(String(chunk))),
    );
    const translators = JSON.parse(line) as number[];
    expect(translators).toHaveLength(1);
    expect(translators.every(running)).toBe(true);
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.once('exit', resolve));
    expect(await gone(translators)).toEqual([]);
  }, 60_000);
});
