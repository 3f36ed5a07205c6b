import { Global, Module } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import { AuditLog } from '@dtr/audit';
import { Clock } from '@dtr/kernel';
import { SecretBox } from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { APP_CONFIG, type AppConfig } from '../config/app.config.js';
import { SmartModule } from '../smart/smart.module.js';
import { AuditController } from './audit.controller.js';
import { auditHashKey } from './audit-hash-key.js';

/** The audit trail, for every module that records (global) and the operators' read API. */
@Global()
@Module({
  imports: [SmartModule],
  controllers: [AuditController],
  providers: [
    {
      provide: AuditLog,
      // SecretBox first: in development it creates the key the hash key is derived from.
      inject: [getDataSourceToken(), APP_CONFIG, Clock, SecretBox],
      useFactory: (ds: DataSource, config: AppConfig, clock: Clock) => new AuditLog(ds, auditHashKey(config), clock),
    },
  ],
  exports: [AuditLog],
})
export class AuditModule {}
