import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { compileCqlOnlyLibraries, type FhirResource, QuestionnairePackage, translateCql } from '@dtr/fhir';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The CQL compile worker as the server runs it (the built module and worker; the e2e tier builds dist/ first), with
 * a CQL-only library of 2000 defines: the kind of library that takes the translator seconds of CPU.
 */
const root = path.resolve(import.meta.dirname, '../../../../..');
const built = path.join(root, 'dist/apps/dtr-server/src/dtr/prefill-pool/cql-compile-worker.js');
type CompilerModule = typeof import('./cql-compile-worker.js');

const DEFINES = 2000;
/** A CQL-only Library of DEFINES defines, each building on the one before. */
function largeCqlOnlyLibrary(): FhirResource {
  const lines = ["library LargePayerLogic version '1.0.0'", "using FHIR version '4.0.1'", 'context Patient'];
  lines.push('define "D0": 0');
  for (let i = 1; i < DEFINES; i++) lines.push(`define "D${i}": "D${i - 1}" + ${i % 7}`);
  return {
    resourceType: 'Library',
    id: 'LargePayerLogic',
    url: 'http://example.org/dtr/Library/LargePayerLogic',
    version: '1.0.0',
    name: 'LargePayerLogic',
    status: 'active',
    content: [{ contentType: 'text/cql', data: Buffer.from(lines.join('\n')).toString('base64') }],
  } as FhirResource;
}

describe('CqlCompileWorker (built worker thread)', () => {
  let Compiler: CompilerModule['CqlCompileWorker'];
  let server: Server;
  let url: string;
  const library = largeCqlOnlyLibrary();

  beforeAll(async () => {
    if (!existsSync(built)) throw new Error(`${built} is missing: the e2e tier builds dist/ first (npm run test:e2e)`);
    Compiler = ((await import(pathToFileURL(built).href)) as CompilerModule).CqlCompileWorker;
    server = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => {
    server?.close();
  });

  it('compiles a 2000-define CQL-only library in a worker thread while this thread answers other requests', async () => {
    const sentToWorkers: unknown[] = [];
    const post = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (this: Worker, value: unknown, transfer?: never) {
      sentToWorkers.push(value);
      return post.call(this, value, transfer);
    };
    const compiler = new Compiler({ deadlineMs: 600_000 });
    // This thread's translator loaded (as in a server that has compiled before): were the compile on this thread, it
    // would now run start to end without letting any I/O in.
    await translateCql("library Warm version '0'\nusing FHIR version '4.0.1'\ndefine X: 1");
    try {
      let settled = false;
      const compiling = compileCqlOnlyLibraries([library], { translate: compiler.translate }).finally(() => {
        settled = true;
      });
      // The event loop is free: an HTTP round trip completes while the library is still being compiled. (On this
      // thread, the translator would run to the end before any I/O is served.)
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
      // The CQL went to the worker (with the package's CQL by library name, for includes); nothing else did.
      expect(sentToWorkers).toEqual([
        {
          id: 0,
          text: expect.stringContaining('define "D1999"'),
          sources: [['LargePayerLogic', expect.stringContaining('define "D1999"')]],
        },
      ]);
    } finally {
      Worker.prototype.postMessage = post;
      await compiler.close();
    }
  });

  it('stops a compile past its deadline (the library is reported, not compiled) and starts a fresh translator', async () => {
    const compiler = new Compiler({ deadlineMs: 1000 });
    try {
      const first = await compileCqlOnlyLibraries([library], { translate: compiler.translate });
      expect(first.resources).toEqual([library]);
      expect(first.issues).toEqual([
        expect.objectContaining({
          severity: 'error',
          code: 'cql-compile-failed',
          library: 'LargePayerLogic|1.0.0',
          message: expect.stringMatching(/the CQL did not compile within the deadline of 1000 ms/),
        }),
      ]);
      // The next library gets a new translator thread (the old one was terminated mid-compile).
      const small = {
        ...library,
        content: [
          {
            contentType: 'text/cql',
            data: Buffer.from('library LargePayerLogic version \'1.0.0\'\ndefine "Small": 1').toString('base64'),
          },
        ],
      } as FhirResource;
      const second = await compileCqlOnlyLibraries([small], { translate: compiler.translate });
      expect(second.issues).toEqual([]);
    } finally {
      await compiler.close();
    }
  });

  it('does not compile a library larger than the size cap, naming the cap, and starts no translator', async () => {
    const spawned: unknown[] = [];
    const compiler = new Compiler({ deadlineMs: 600_000 });
    const post = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (this: Worker, value: unknown, transfer?: never) {
      spawned.push(value);
      return post.call(this, value, transfer);
    };
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
      expect(spawned).toEqual([]);
    } finally {
      Worker.prototype.postMessage = post;
      await compiler.close();
    }
  });
});
