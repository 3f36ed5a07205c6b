import { Clock, SystemClock } from '@dtr/kernel';
import { PackageCache, PayerRegistry } from '@dtr/payer';
import {
  BackendServicesClient,
  LaunchService,
  type OutboundPolicy,
  SecretBox,
  SessionStore,
  SigningKeyStore,
  SmartDiscovery,
  SmartSessions,
  TenantRegistry,
} from '@dtr/smart';
import type { DataSource } from 'typeorm';
import type { AppConfig } from './config/app.config.js';
import type { JsonLogger } from './logging/json-logger.js';
import { secretBoxFromConfig } from './smart/secret-box-from-config.js';

/** The SMART and payer services of one process, built once from the database and the configuration. */
export interface Services {
  clock: Clock;
  /** Where outbound requests may go: plain http only to loopback, and never in production. */
  policy: OutboundPolicy;
  secretBox: SecretBox;
  signingKeys: SigningKeyStore;
  tenants: TenantRegistry;
  discovery: SmartDiscovery;
  sessionStore: SessionStore;
  launches: LaunchService;
  smartSessions: SmartSessions;
  payers: PayerRegistry;
  backendServices: BackendServicesClient;
  packageCache: PackageCache;
}

export interface ComposeOptions {
  /** Told when a development encryption key is generated. */
  logger?: JsonLogger;
  clock?: Clock;
}

/**
 * The one composition of the SMART and payer services: the Nest modules take their providers from it and the
 * `dtr` command line calls it, so both see the same key ring, policy and stores (a payer's sealed client key
 * opens the same way in `dtr payer list` as in the server).
 */
export function composeServices(dataSource: DataSource, config: AppConfig, options: ComposeOptions = {}): Services {
  const clock = options.clock ?? new SystemClock();
  const policy: OutboundPolicy = { allowInsecureLoopback: config.profile !== 'production' };
  const secretBox = secretBoxFromConfig(config, options.logger);
  const signingKeys = new SigningKeyStore(dataSource, secretBox, clock);
  const tenants = new TenantRegistry(dataSource, secretBox, policy);
  const discovery = new SmartDiscovery(policy, clock);
  const sessionStore = new SessionStore(dataSource, secretBox, clock);
  const client = { policy, keys: signingKeys };
  return {
    clock,
    policy,
    secretBox,
    signingKeys,
    tenants,
    discovery,
    sessionStore,
    launches: new LaunchService(dataSource, tenants, discovery, sessionStore, secretBox, clock, {
      ...client,
      sessionTtlMs: config.sessionTtlMs,
    }),
    smartSessions: new SmartSessions(sessionStore, tenants, discovery, clock, client),
    payers: new PayerRegistry(dataSource, policy, secretBox),
    backendServices: new BackendServicesClient(signingKeys, policy, clock),
    packageCache: new PackageCache(dataSource),
  };
}
