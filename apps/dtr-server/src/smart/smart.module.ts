import { type FactoryProvider, type InjectionToken, Inject, Module, type OnApplicationBootstrap } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { PassportModule } from '@nestjs/passport';
import { getDataSourceToken } from '@nestjs/typeorm';
import { Clock } from '@dtr/kernel';
import {
  ClientKeyProvider,
  LaunchService,
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
import { composeServices, type Services } from '../compose-services.js';
import { APP_CONFIG, type AppConfig } from '../config/app.config.js';
import { JsonLogger } from '../logging/json-logger.js';
import { AppPageController } from './app-page.controller.js';
import { OrderCandidatesService } from '../dtr/order-candidates.service.js';
import { JwksController } from './jwks.controller.js';
import { LaunchController } from './launch.controller.js';
import { SessionController, SessionViewService } from './session.controller.js';

export const OUTBOUND_POLICY = Symbol('OUTBOUND_POLICY');
/** The process's services (see compose-services.ts); every SMART and payer provider is taken from it. */
const SERVICES = Symbol('SERVICES');

/** A provider for `token` that hands out the composed service `key`. */
export function fromServices(token: InjectionToken, key: keyof Services): FactoryProvider {
  return { provide: token, inject: [SERVICES], useFactory: (services: Services) => services[key] };
}

/**
 * SMART confidential launch: tenants, discovery, launch/callback, sessions and the token vault, the global
 * session guard, encryption at rest (the key ring from configuration) and our signing keys.
 */
@Module({
  imports: [PassportModule],
  controllers: [LaunchController, SessionController, AppPageController, TenantsController, JwksController],
  providers: [
    {
      provide: SERVICES,
      inject: [getDataSourceToken(), APP_CONFIG, JsonLogger],
      useFactory: (ds: DataSource, config: AppConfig, logger: JsonLogger) => composeServices(ds, config, { logger }),
    },
    fromServices(Clock, 'clock'),
    fromServices(OUTBOUND_POLICY, 'policy'),
    fromServices(SecretBox, 'secretBox'),
    fromServices(SigningKeyStore, 'signingKeys'),
    { provide: ClientKeyProvider, useExisting: SigningKeyStore },
    fromServices(TenantRegistry, 'tenants'),
    fromServices(SmartDiscovery, 'discovery'),
    fromServices(SessionStore, 'sessionStore'),
    fromServices(LaunchService, 'launches'),
    fromServices(SmartSessions, 'smartSessions'),
    {
      provide: BrowserCookies,
      inject: [APP_CONFIG],
      useFactory: (config: AppConfig) =>
        new BrowserCookies(config.profile === 'production' || (config.publicUrl ?? '').startsWith('https://')),
    },
    SessionViewService,
    OrderCandidatesService,
    SessionCookieStrategy,
    AdminGuard,
    { provide: APP_GUARD, useClass: SessionGuard },
  ],
  exports: [
    SERVICES,
    OrderCandidatesService,
    TenantRegistry,
    LaunchService,
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
