import { type DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { buildDataSourceOptions } from '@dtr/persistence';
import { APP_CONFIG, type AppConfig } from './config/app.config.js';
import { AuditModule } from './audit/audit.module.js';
import { HealthModule } from './health/health.module.js';
import { DtrExceptionFilter } from './http/dtr-exception.filter.js';
import { JsonLogger } from './logging/json-logger.js';
import { DtrModule } from './dtr/dtr.module.js';
import { PayersModule } from './payers/payers.module.js';
import { RetentionModule } from './retention/retention.module.js';
import { SmartModule } from './smart/smart.module.js';
import { UdapAdminModule } from './admin/udap-admin.module.js';

export interface AppModuleOptions {
  config: AppConfig;
  /** The database actually used: DATABASE_URL, or the embedded server's URL. */
  databaseUrl: string;
  logger: JsonLogger;
}

/** Composition root: the one place that lists modules and global providers. */
@Module({})
export class AppModule {
  static forRoot(options: AppModuleOptions): DynamicModule {
    return {
      module: AppModule,
      global: true,
      imports: [
        TypeOrmModule.forRoot({
          ...buildDataSourceOptions({
            url: options.databaseUrl,
            poolMax: options.config.dbPoolMax,
          }),
          retryAttempts: 3,
          retryDelay: 500,
        }),
        HealthModule,
        SmartModule,
        AuditModule,
        PayersModule,
        UdapAdminModule,
        DtrModule,
        RetentionModule,
      ],
      providers: [
        { provide: APP_CONFIG, useValue: options.config },
        { provide: JsonLogger, useValue: options.logger },
        {
          provide: APP_FILTER,
          useFactory: (logger: JsonLogger) => new DtrExceptionFilter(logger),
          inject: [JsonLogger],
        },
      ],
      exports: [APP_CONFIG, JsonLogger],
    };
  }
}
