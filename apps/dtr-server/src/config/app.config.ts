import { availableParallelism } from 'node:os';
import path from 'node:path';
import { settingsFrom } from '@dtr/kernel';
import { DEFAULT_OUTBOUND_LIMITS, networkList, type OutboundLimits } from '@dtr/smart';
import { z } from 'zod';

/**
 * Every setting of the server, read from the environment in this one place and validated at boot.
 * A bad or missing setting stops the process with a message naming the setting.
 * The README's configuration reference lists the same settings; keep both in step.
 */
const PROFILES = ['development', 'sandbox', 'test', 'production'] as const;
type Profile = (typeof PROFILES)[number];

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const port = z.coerce
  .number({ error: 'must be a port number (0-65535; 0 picks a free port)' })
  .int({ error: 'must be a port number (0-65535; 0 picks a free port)' })
  .min(0, { error: 'must be a port number (0-65535; 0 picks a free port)' })
  .max(65535, { error: 'must be a port number (0-65535; 0 picks a free port)' });
const positiveInt = z.coerce
  .number({ error: 'must be a positive integer' })
  .int({ error: 'must be a positive integer' })
  .positive({ error: 'must be a positive integer' });
const bool = z
  .enum(['true', 'false', '1', '0'], { error: 'must be true or false' })
  .transform((v) => v === 'true' || v === '1');

const encryptionKeys = z.string().transform((value, ctx) => {
  const keys = new Map<string, Buffer>();
  for (const entry of value
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean)) {
    const [kid, material, ...rest] = entry.split(':');
    const key = material ? Buffer.from(material, 'base64') : Buffer.alloc(0);
    if (!kid || !/^[A-Za-z0-9_-]{1,32}$/.test(kid) || rest.length > 0 || key.length !== 32) {
      ctx.addIssue({
        code: 'custom',
        message:
          'expected a comma-separated list of <key-id>:<base64 of 32 random bytes>, the first one used to encrypt',
      });
      return z.NEVER;
    }
    keys.set(kid, key);
  }
  if (keys.size === 0) {
    ctx.addIssue({ code: 'custom', message: 'at least one key is needed' });
    return z.NEVER;
  }
  return keys;
});

const networks = z.string().transform((value, ctx) => {
  const cidrs = value
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);
  try {
    networkList(cidrs);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
  return cidrs;
});
const d = DEFAULT_OUTBOUND_LIMITS;

const schema = z
  .object({
    DTR_PROFILE: z.enum(PROFILES).default('development'),
    DTR_HOST: z.string().min(1).default('127.0.0.1'),
    DTR_PORT: port.default(3000),
    DTR_PUBLIC_URL: z.url({ protocol: /^https?$/ }).optional(),
    DATABASE_URL: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
      .optional(),
    DTR_DATA_DIR: z.string().min(1).default('.data'),
    DTR_DB_POOL_MAX: positiveInt.max(200).default(10),
    DTR_LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
    DTR_BODY_LIMIT_BYTES: positiveInt.default(5 * 1024 * 1024),
    DTR_JSON_MAX_DEPTH: positiveInt.max(1000).default(64),
    DTR_SHUTDOWN_TIMEOUT_MS: positiveInt.default(10_000),
    DTR_TRUST_PROXY: bool.default(false),
    DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER: bool.default(false),
    DTR_ENCRYPTION_KEYS: encryptionKeys.optional(),
    DTR_ADMIN_TOKEN: z
      .string()
      .regex(/^[\x21-\x7e]{32,512}$/, 'must be 32 or more printable characters (e.g. openssl rand -hex 32)')
      .optional(),
    DTR_SESSION_TTL_MINUTES: positiveInt.max(24 * 60).default(480),
    DTR_SESSION_IDLE_MINUTES: positiveInt.max(24 * 60).default(30),
    DTR_DOCS: bool.optional(),
    DTR_LAUNCH_RATE_LIMIT: positiveInt.max(1_000_000).default(120),
    DTR_LAUNCH_RATE_WINDOW_SECONDS: positiveInt.max(86_400).default(60),
    DTR_PURGE_INTERVAL_MINUTES: positiveInt.max(7 * 24 * 60).default(60),
    DTR_RETENTION_SESSION_DAYS: positiveInt.max(3650).default(1),
    DTR_RETENTION_LAUNCH_ATTEMPT_HOURS: positiveInt.max(24 * 3650).default(24),
    DTR_RETENTION_COMPLETED_FORM_DAYS: positiveInt.max(3650).default(1),
    DTR_RETENTION_DRAFT_DAYS: positiveInt.max(3650).default(14),
    DTR_RETENTION_PACKAGE_DAYS: positiveInt.max(3650).default(30),
    // The database refuses to delete an audit event younger than 365 days whatever this says (see the migration).
    DTR_RETENTION_AUDIT_DAYS: positiveInt
      .min(365, { error: 'must be at least 365 (days); audit events are kept for years (default 2192, six years)' })
      .max(36_500)
      .default(2192),
    DTR_PREFILL_WORKERS: z.coerce
      .number({ error: 'must be a whole number of worker threads (0-64; 0 prefills in the request thread)' })
      .int({ error: 'must be a whole number of worker threads (0-64; 0 prefills in the request thread)' })
      .min(0, { error: 'must be a whole number of worker threads (0-64; 0 prefills in the request thread)' })
      .max(64, { error: 'must be a whole number of worker threads (0-64; 0 prefills in the request thread)' })
      .default(() => availableParallelism()),
    DTR_PREFILL_DEADLINE_MS: positiveInt.max(600_000).default(5_000),
    DTR_PREFILL_QUEUE_MAX: positiveInt.max(10_000).default(32),
    DTR_PREFILL_WORKER_MEMORY_MB: positiveInt.min(16).max(16_384).default(512),
    DTR_PREFILL_WORKER_STACK_MB: positiveInt.max(256).default(4),
    DTR_CQL_COMPILE_DEADLINE_MS: positiveInt.max(600_000).default(30_000),
    DTR_CQL_MAX_BYTES: positiveInt.max(64 * 1024 * 1024).default(1024 * 1024),
    /** Keyed hashes of patient and resource ids in the audit trail (base64, 16+ bytes); else derived from the key ring. */
    DTR_AUDIT_HASH_KEY: z
      .string()
      .refine((v) => Buffer.from(v, 'base64').length >= 16, 'must be base64 of at least 16 random bytes')
      .optional(),
    DTR_DELIVERY_MAX_ATTEMPTS: positiveInt.max(100).default(8),
    DTR_DELIVERY_RETRY_BASE_MS: positiveInt.default(2_000),
    DTR_DELIVERY_RETRY_MAX_MS: positiveInt.default(300_000),
    DTR_DELIVERY_TIMEOUT_MS: positiveInt.default(20_000),
    DTR_DELIVERY_LEASE_MS: positiveInt.default(60_000),
    DTR_DELIVERY_POLL_MS: positiveInt.default(1_000),
    DTR_WRITE_BACK_LEASE_MS: positiveInt.default(90_000),
    DTR_OUTBOUND_ALLOWED_NETWORKS: networks.optional(),
    DTR_UDAP_CLIENT_NAME: z.string().min(1).max(200).default('DTR backend'),
    DTR_UDAP_CONTACT: z
      .string()
      .regex(/^mailto:[^\s@]+@[^\s@]+$/, { error: 'must be a mailto: URI (mailto:ops@example.org)' })
      .optional(),
    DTR_UDAP_LOGO_URI: z.url({ protocol: /^https?$/ }).optional(),
    DTR_UDAP_ORGANIZATION_ID: z.url().optional(),
    DTR_UDAP_ORGANIZATION_NAME: z.string().min(1).max(200).optional(),
    DTR_UDAP_PURPOSE_OF_USE: z
      .string()
      .regex(/^\S+$/, { error: 'must be space-free codes separated by commas' })
      .default('urn:oid:2.16.840.1.113883.5.8#TREAT'),
    DTR_EHR_MAX_RESPONSE_BYTES: positiveInt.default(d.ehr.maxBytes),
    DTR_PAYER_MAX_RESPONSE_BYTES: positiveInt.default(d.payer.maxBytes),
    DTR_DISCOVERY_MAX_RESPONSE_BYTES: positiveInt.default(d.discovery.maxBytes),
    DTR_UPSTREAM_JSON_MAX_DEPTH: positiveInt.max(1000).default(d.ehr.maxDepth),
    DTR_PACKAGE_MAX_RESOURCES: positiveInt.default(d.packageMaxResources),
    DTR_EXPAND_MAX_PAGES: positiveInt.max(1000).default(d.expandMaxPages),
    DTR_EXPAND_MAX_CODES: positiveInt.default(d.expandMaxCodes),
  })
  .superRefine((env, ctx) => {
    if (env.DTR_DELIVERY_LEASE_MS <= env.DTR_DELIVERY_TIMEOUT_MS)
      ctx.addIssue({
        code: 'custom',
        path: ['DTR_DELIVERY_LEASE_MS'],
        message: 'must be longer than DTR_DELIVERY_TIMEOUT_MS (a send still running must not be claimed again)',
      });
    if (env.DTR_PROFILE !== 'production') return;
    if (env.DTR_PREFILL_WORKERS === 0)
      ctx.addIssue({
        code: 'custom',
        path: ['DTR_PREFILL_WORKERS'],
        message:
          "must be 1 or more in the production profile (0 runs the payer's logic in the request thread, with no deadline or memory limit)",
      });
    // Outside the development/sandbox/test profiles nothing secret or public-facing is defaulted.
    if (!env.DTR_PUBLIC_URL) {
      ctx.addIssue({ code: 'custom', path: ['DTR_PUBLIC_URL'], message: 'is required in the production profile' });
    } else if (!env.DTR_PUBLIC_URL.startsWith('https://')) {
      ctx.addIssue({
        code: 'custom',
        path: ['DTR_PUBLIC_URL'],
        message: 'must be an https:// URL in the production profile',
      });
    }
    if (!env.DTR_ENCRYPTION_KEYS) {
      ctx.addIssue({ code: 'custom', path: ['DTR_ENCRYPTION_KEYS'], message: 'is required in the production profile' });
    }
    if (!env.DATABASE_URL) {
      ctx.addIssue({
        code: 'custom',
        path: ['DATABASE_URL'],
        message: 'is required in the production profile (the embedded database is for development and tests)',
      });
    }
  });

export interface AppConfig {
  profile: Profile;
  host: string;
  port: number;
  /** Base URL under which browsers and peers reach us; derived from host and port outside production. */
  publicUrl: string | undefined;
  /** External database; when absent an embedded PostgreSQL is started in `dataDir`. */
  databaseUrl: string | undefined;
  dataDir: string;
  dbPoolMax: number;
  logLevel: LogLevel;
  bodyLimitBytes: number;
  jsonMaxDepth: number;
  shutdownTimeoutMs: number;
  trustProxy: boolean;
  /**
   * Whether a payer registered with `tokenSource: launch` may get the launch's EHR token in the production profile
   * (always allowed in the others; same-origin and audited everywhere).
   */
  allowLaunchTokenForPayer: boolean;
  /** Key ring for encryption at rest: key id → 32-byte key; the first entry encrypts. */
  encryptionKeys: ReadonlyMap<string, Buffer> | undefined;
  /** Bearer token of the admin API; the admin API is off without one. */
  adminToken: string | undefined;
  sessionTtlMs: number;
  /** A session not used for this long answers as expired (its absolute lifetime is `sessionTtlMs`). */
  sessionIdleMs: number;
  /** Swagger UI at /docs and the document at /docs-json: on outside production unless DTR_DOCS says otherwise. */
  docs: boolean;
  /** `/launch` requests per client address per window (each instance counts its own). */
  launchRateLimit: { max: number; windowMs: number };
  /** The purge job: how often it runs (one instance at a time) and how long each kind of row is kept. */
  retention: RetentionWindows & { intervalMs: number };
  /** Prefill worker threads; 0 evaluates in the request thread (blocks the event loop while CQL runs). */
  prefillWorkers: number;
  /** Bounds on the payer's logic: see PrefillPoolOptions and CqlCompilePool. */
  prefillLimits: {
    deadlineMs: number;
    queueMax: number;
    workerMemoryMb: number;
    workerStackMb: number;
  };
  cqlCompile: { deadlineMs: number; maxBytes: number };
  auditHashKey: Buffer | undefined;
  /** The outbox: attempts before the dead letter, backoff, per-attempt timeout, lease, polling interval. */
  delivery: {
    maxAttempts: number;
    baseDelayMs: number;
    maxDelayMs: number;
    timeoutMs: number;
    leaseMs: number;
    pollMs: number;
    /** How long one instance holds a submission's EHR write-back (a dead instance's is taken over after it). */
    writeBackLeaseMs: number;
  };
  /** Outbound calls: private networks that may be reached (CIDR), and how much upstreams may answer. */
  outbound: { allowedNetworks: string[]; limits: OutboundLimits };
  /**
   * UDAP: software statement defaults (client name, contact, logo) and the `hl7-b2b` facts of our client_credentials
   * token requests (organization id and name, purpose of use; default TREAT).
   */
  udap: {
    clientName: string;
    contacts: string[];
    logoUri: string | undefined;
    organizationId: string | undefined;
    organizationName: string | undefined;
    purposeOfUse: string[];
  };
}

/** How long rows are kept after they stop being needed (see README: Retention). */
export interface RetentionWindows {
  /** Ended sessions (expired, idle, revoked, logged out): their row; their tokens are deleted at once. */
  sessionMs: number;
  /** Launch attempts after they expired or were used. */
  launchAttemptMs: number;
  /** Completed or stopped forms of ended sessions (the EHR holds them), after their last change. */
  completedFormMs: number;
  /** Other drafts of ended sessions (abandoned), after their last change. */
  draftMs: number;
  /** A payer's cached package content, when nothing of it was retrieved for this long. */
  packageMs: number;
  /** Audit events, after they were recorded. */
  auditMs: number;
}

const DAY_MS = 24 * 60 * 60_000;

/** Loopback names and addresses: what a server without a profile may listen on. */
function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

export function loadAppConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const input = settingsFrom(env, Object.keys(schema.shape));
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const setting = String(issue.path[0] ?? 'configuration');
        return `${setting}: ${issue.message}`;
      }),
    );
  }
  const e = parsed.data;
  if (input['DTR_PROFILE'] === undefined && !isLoopbackHost(e.DTR_HOST)) {
    throw new ConfigError([
      `DTR_HOST: ${e.DTR_HOST} is not a loopback address; without DTR_PROFILE the server listens on loopback only. ` +
        'Set DTR_PROFILE=production (with its required settings) to listen on other interfaces',
    ]);
  }
  return {
    profile: e.DTR_PROFILE,
    host: e.DTR_HOST,
    port: e.DTR_PORT,
    publicUrl: e.DTR_PUBLIC_URL?.replace(/\/+$/, ''),
    databaseUrl: e.DATABASE_URL,
    dataDir: path.resolve(e.DTR_DATA_DIR),
    dbPoolMax: e.DTR_DB_POOL_MAX,
    logLevel: e.DTR_LOG_LEVEL,
    bodyLimitBytes: e.DTR_BODY_LIMIT_BYTES,
    jsonMaxDepth: e.DTR_JSON_MAX_DEPTH,
    shutdownTimeoutMs: e.DTR_SHUTDOWN_TIMEOUT_MS,
    trustProxy: e.DTR_TRUST_PROXY,
    allowLaunchTokenForPayer: e.DTR_PROFILE !== 'production' || e.DTR_ALLOW_LAUNCH_TOKEN_FOR_PAYER,
    encryptionKeys: e.DTR_ENCRYPTION_KEYS,
    adminToken: e.DTR_ADMIN_TOKEN,
    sessionTtlMs: e.DTR_SESSION_TTL_MINUTES * 60_000,
    sessionIdleMs: e.DTR_SESSION_IDLE_MINUTES * 60_000,
    docs: e.DTR_DOCS ?? e.DTR_PROFILE !== 'production',
    launchRateLimit: { max: e.DTR_LAUNCH_RATE_LIMIT, windowMs: e.DTR_LAUNCH_RATE_WINDOW_SECONDS * 1000 },
    retention: {
      intervalMs: e.DTR_PURGE_INTERVAL_MINUTES * 60_000,
      sessionMs: e.DTR_RETENTION_SESSION_DAYS * DAY_MS,
      launchAttemptMs: e.DTR_RETENTION_LAUNCH_ATTEMPT_HOURS * 60 * 60_000,
      completedFormMs: e.DTR_RETENTION_COMPLETED_FORM_DAYS * DAY_MS,
      draftMs: e.DTR_RETENTION_DRAFT_DAYS * DAY_MS,
      packageMs: e.DTR_RETENTION_PACKAGE_DAYS * DAY_MS,
      auditMs: e.DTR_RETENTION_AUDIT_DAYS * DAY_MS,
    },
    prefillWorkers: e.DTR_PREFILL_WORKERS,
    prefillLimits: {
      deadlineMs: e.DTR_PREFILL_DEADLINE_MS,
      queueMax: e.DTR_PREFILL_QUEUE_MAX,
      workerMemoryMb: e.DTR_PREFILL_WORKER_MEMORY_MB,
      workerStackMb: e.DTR_PREFILL_WORKER_STACK_MB,
    },
    cqlCompile: { deadlineMs: e.DTR_CQL_COMPILE_DEADLINE_MS, maxBytes: e.DTR_CQL_MAX_BYTES },
    auditHashKey: e.DTR_AUDIT_HASH_KEY ? Buffer.from(e.DTR_AUDIT_HASH_KEY, 'base64') : undefined,
    delivery: {
      maxAttempts: e.DTR_DELIVERY_MAX_ATTEMPTS,
      baseDelayMs: e.DTR_DELIVERY_RETRY_BASE_MS,
      maxDelayMs: e.DTR_DELIVERY_RETRY_MAX_MS,
      timeoutMs: e.DTR_DELIVERY_TIMEOUT_MS,
      leaseMs: e.DTR_DELIVERY_LEASE_MS,
      pollMs: e.DTR_DELIVERY_POLL_MS,
      writeBackLeaseMs: e.DTR_WRITE_BACK_LEASE_MS,
    },
    outbound: {
      allowedNetworks: e.DTR_OUTBOUND_ALLOWED_NETWORKS ?? [],
      limits: {
        ehr: { maxBytes: e.DTR_EHR_MAX_RESPONSE_BYTES, maxDepth: e.DTR_UPSTREAM_JSON_MAX_DEPTH },
        payer: { maxBytes: e.DTR_PAYER_MAX_RESPONSE_BYTES, maxDepth: e.DTR_UPSTREAM_JSON_MAX_DEPTH },
        discovery: { maxBytes: e.DTR_DISCOVERY_MAX_RESPONSE_BYTES, maxDepth: d.discovery.maxDepth },
        packageMaxResources: e.DTR_PACKAGE_MAX_RESOURCES,
        expandMaxPages: e.DTR_EXPAND_MAX_PAGES,
        expandMaxCodes: e.DTR_EXPAND_MAX_CODES,
      },
    },
    udap: {
      clientName: e.DTR_UDAP_CLIENT_NAME,
      contacts: e.DTR_UDAP_CONTACT ? [e.DTR_UDAP_CONTACT] : [],
      logoUri: e.DTR_UDAP_LOGO_URI,
      organizationId: e.DTR_UDAP_ORGANIZATION_ID,
      organizationName: e.DTR_UDAP_ORGANIZATION_NAME,
      purposeOfUse: e.DTR_UDAP_PURPOSE_OF_USE.split(',').filter(Boolean),
    },
  };
}

/** Injection token for the validated configuration. */
export const APP_CONFIG = Symbol('APP_CONFIG');
