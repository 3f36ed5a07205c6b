import { Module } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import { AuditLog } from '@dtr/audit';
import type { DataSource } from 'typeorm';
import { APP_CONFIG, type AppConfig } from '../config/app.config.js';
import { JsonLogger } from '../logging/json-logger.js';
import { PurgeService, PurgeWorker } from './purge.service.js';

/** The retention purge, run in the background of every instance (one at a time, through the database). */
@Module({
  providers: [
    {
      provide: PurgeService,
      inject: [getDataSourceToken(), AuditLog, APP_CONFIG],
      useFactory: (ds: DataSource, audit: AuditLog, config: AppConfig) =>
        new PurgeService(ds, audit, {
          windows: config.retention,
          idleMs: config.sessionIdleMs,
          actor: { type: 'system', who: 'dtr-backend' },
        }),
    },
    {
      // Started on bootstrap, stopped (a running purge finished) on shutdown.
      provide: PurgeWorker,
      inject: [PurgeService, JsonLogger, APP_CONFIG],
      useFactory: (purge: PurgeService, logger: JsonLogger, config: AppConfig) =>
        new PurgeWorker(purge, logger, config.retention.intervalMs),
    },
  ],
})
export class RetentionModule {}
