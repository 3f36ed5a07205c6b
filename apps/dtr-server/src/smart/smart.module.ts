import { Inject, Module, type OnApplicationBootstrap } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { PassportModule } from '@nestjs/passport';
import { getDataSourceToken } from '@nestjs/typeorm';
import { Clock, SystemClock } from '@dtr/kernel';
import {
  ClientKeyProvider,
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
import { AdminGuard } from '../admin/admin.guard.js';
import { TenantsController } from '../admin/tenants.controller.js';
import { BrowserCookies } from '../auth/cookies.js';
import { SessionCookieStrategy } from '../auth/session-cookie.strategy.js';
import { SessionGuard } from '../auth/session.guard.js';
import { APP_CONFIG, type AppConfig } from '../config/app.config.js';
import { JsonLogger } from '../logging/json-logger.js';
import { AppPageController } from './app-page.controller.js';
import { secretBoxFromConfig } from './secret-box-from-config.js';
import { JwksController } from './jwks.controller.js';
import { LaunchController } from './launch.controller.js';
import { SessionController, SessionViewService } from './session.controller.js';

export const OUTBOUND_POLICY = Symbol('OUTBOUND_POLICY');

/**
 * SMART confidential launch: tenants, discovery, launch/callback, sessions and the token vault, the global
 * session guard, encryption at rest (the key ring from configuration) and our signing keys.
 */
@Module({
  imports: [PassportModule],
  controllers: [LaunchController, SessionController, AppPageController, TenantsController, JwksController],
  providers: [
    { provide: Clock, useClass: SystemClock },
    {
      provide: SecretBox,
      inject: [APP_CONFIG, JsonLogger],
      useFactory: (config: AppConfig, logger: JsonLogger) => secretBoxFromConfig(config, logger),
    },
    {
      provide: SigningKeyStore,
      inject: [getDataSourceToken(), SecretBox, Clock],
      useFactory: (ds: DataSource, box: SecretBox, clock: Clock) => new SigningKeyStore(ds, box, clock),
    },
    { provide: ClientKeyProvider, useExisting: SigningKeyStore },
    {
      provide: OUTBOUND_POLICY,
      inject: [APP_CONFIG],
      // Plain http only to loopback, and never in production.
      useFactory: (config: AppConfig): OutboundPolicy => ({ allowInsecureLoopback: config.profile !== 'production' }),
    },
    {
      provide: BrowserCookies,
      inject: [APP_CONFIG],
      useFactory: (config: AppConfig) =>
        new BrowserCookies(config.profile === 'production' || (config.publicUrl ?? '').startsWith('https://')),
    },
    {
      provide: TenantRegistry,
      inject: [getDataSourceToken(), SecretBox, OUTBOUND_POLICY],
      useFactory: (ds: DataSource, box: SecretBox, policy: OutboundPolicy) => new TenantRegistry(ds, box, policy),
    },
    {
      provide: SmartDiscovery,
      inject: [OUTBOUND_POLICY, Clock],
      useFactory: (policy: OutboundPolicy, clock: Clock) => new SmartDiscovery(policy, clock),
    },
    {
      provide: SessionStore,
      inject: [getDataSourceToken(), SecretBox, Clock],
      useFactory: (ds: DataSource, box: SecretBox, clock: Clock) => new SessionStore(ds, box, clock),
    },
    {
      provide: LaunchService,
      inject: [
        getDataSourceToken(),
        TenantRegistry,
        SmartDiscovery,
        SessionStore,
        SecretBox,
        Clock,
        OUTBOUND_POLICY,
        ClientKeyProvider,
        APP_CONFIG,
      ],
      useFactory: (
        ds: DataSource,
        tenants: TenantRegistry,
        discovery: SmartDiscovery,
        sessions: SessionStore,
        box: SecretBox,
        clock: Clock,
        policy: OutboundPolicy,
        keys: ClientKeyProvider,
        config: AppConfig,
      ) =>
        new LaunchService(ds, tenants, discovery, sessions, box, clock, {
          policy,
          keys,
          sessionTtlMs: config.sessionTtlMs,
        }),
    },
    {
      provide: SmartSessions,
      inject: [SessionStore, TenantRegistry, SmartDiscovery, Clock, OUTBOUND_POLICY, ClientKeyProvider],
      useFactory: (
        store: SessionStore,
        tenants: TenantRegistry,
        discovery: SmartDiscovery,
        clock: Clock,
        policy: OutboundPolicy,
        keys: ClientKeyProvider,
      ) => new SmartSessions(store, tenants, discovery, clock, { policy, keys }),
    },
    SessionViewService,
    SessionCookieStrategy,
    AdminGuard,
    { provide: APP_GUARD, useClass: SessionGuard },
  ],
  exports: [
    TenantRegistry,
    SmartSessions,
    SessionStore,
    SecretBox,
    SigningKeyStore,
    ClientKeyProvider,
    OUTBOUND_POLICY,
    Clock,
  ],
})
export class SmartModule implements OnApplicationBootstrap {
  constructor(
    private readonly keys: SigningKeyStore,
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly logger: JsonLogger,
  ) {}

  /** Outside production, make sure RS384 and ES384 keys exist so private_key_jwt works out of the box. */
  async onApplicationBootstrap(): Promise<void> {
    if (this.config.profile === 'production') return;
    const created = await this.keys.ensureKeys();
    for (const key of created)
      this.logger.entry('info', 'generated a development signing key', { kid: key.kid, alg: key.alg });
  }
}
