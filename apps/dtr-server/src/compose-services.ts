import { AuditLog } from '@dtr/audit';
import { Outbox, SubmissionRepository } from '@dtr/disclosure';
import { Clock, SystemClock } from '@dtr/kernel';
import { PackageCache, PayerRegistry, PayerUdapRegistration } from '@dtr/payer';
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
  TenantUdapRegistration,
  type UdapClientOptions,
  UdapIdentityStore,
  UdapRegistrar,
} from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { auditHashKey } from './audit/audit-hash-key.js';
import type { AppConfig } from './config/app.config.js';
import type { JsonLogger } from './logging/json-logger.js';
import { secretBoxFromConfig } from './smart/secret-box-from-config.js';

/** The SMART, payer, audit and disclosure services of one process, built once from the database and the configuration. */
export interface Services {
  dataSource: DataSource;
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
  /** The append-only audit trail. */
  audit: AuditLog;
  /** Payer-bound submissions and the outbox that delivers them. */
  submissions: SubmissionRepository;
  outbox: Outbox;
  /** Our UDAP certificates (keys sealed) and the communities' trust anchors. */
  udapIdentities: UdapIdentityStore;
  udapRegistrar: UdapRegistrar;
  tenantUdap: TenantUdapRegistration;
  payerUdap: PayerUdapRegistration;
}

export interface ComposeOptions {
  /** Told when a development encryption key is generated. */
  logger?: JsonLogger;
  clock?: Clock;
}

/**
 * The one composition of the SMART, payer, audit and disclosure services: the Nest modules take their providers from it and the
 * `dtr` command line calls it, so both see the same key ring, policy and stores (a payer's sealed client key
 * opens the same way in `dtr payer list` as in the server).
 */
export function composeServices(dataSource: DataSource, config: AppConfig, options: ComposeOptions = {}): Services {
  const clock = options.clock ?? new SystemClock();
  const policy: OutboundPolicy = {
    allowInsecureLoopback: config.profile !== 'production',
    allowedNetworks: config.outbound.allowedNetworks,
    limits: config.outbound.limits,
  };
  const secretBox = secretBoxFromConfig(config, options.logger);
  const signingKeys = new SigningKeyStore(dataSource, secretBox, clock);
  const tenants = new TenantRegistry(dataSource, secretBox, policy);
  const discovery = new SmartDiscovery(policy, clock);
  const sessionStore = new SessionStore(dataSource, secretBox, clock, { idleMs: config.sessionIdleMs });
  const udapIdentities = new UdapIdentityStore(dataSource, secretBox, clock);
  const udapRegistrar = new UdapRegistrar(udapIdentities, policy, clock);
  const udap: UdapClientOptions = {
    identities: udapIdentities,
    b2b: {
      organizationId: config.udap.organizationId ?? config.publicUrl ?? `http://${config.host}:${config.port}`,
      ...(config.udap.organizationName ? { organizationName: config.udap.organizationName } : {}),
      purposeOfUse: config.udap.purposeOfUse,
    },
  };
  const client = { policy, keys: signingKeys, udap };
  const submissions = new SubmissionRepository(dataSource, secretBox, clock);
  const payers = new PayerRegistry(dataSource, policy, secretBox, config.allowLaunchTokenForPayer);
  // After the secret box: in development it creates the key the audit hash key is derived from.
  const audit = new AuditLog(dataSource, auditHashKey(config), clock);
  const statementDefaults = {
    clientName: config.udap.clientName,
    contacts: config.udap.contacts,
    ...(config.udap.logoUri ? { logoUri: config.udap.logoUri } : {}),
  };
  return {
    dataSource,
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
      udapDiscovery: udapRegistrar,
      onTieredOAuthSkipped: (tenantId, reason) =>
        options.logger?.entry('warn', 'Tiered OAuth identity provider not sent', { tenantId, reason }),
    }),
    smartSessions: new SmartSessions(sessionStore, tenants, discovery, clock, client),
    payers,
    backendServices: new BackendServicesClient(signingKeys, policy, clock, undefined, undefined, udap),
    packageCache: new PackageCache(dataSource),
    audit,
    submissions,
    outbox: new Outbox(dataSource, submissions, clock, config.delivery),
    udapIdentities,
    udapRegistrar,
    tenantUdap: new TenantUdapRegistration(tenants, udapRegistrar, audit, {
      ...statementDefaults,
      ...(config.publicUrl ? { redirectUri: `${config.publicUrl}/callback` } : {}),
    }),
    payerUdap: new PayerUdapRegistration(payers, udapRegistrar, audit, statementDefaults),
  };
}
