import { Global, Module } from '@nestjs/common';
import { AuditLog } from '@dtr/audit';
import { fromServices, SmartModule } from '../smart/smart.module.js';
import { AuditController } from './audit.controller.js';

/** The audit trail, for every module that records (global) and the operators' read API. */
@Global()
@Module({
  imports: [SmartModule],
  controllers: [AuditController],
  providers: [fromServices(AuditLog, 'audit')],
  exports: [AuditLog],
})
export class AuditModule {}
