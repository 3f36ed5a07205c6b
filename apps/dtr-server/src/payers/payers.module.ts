import { Module } from '@nestjs/common';
import { PackageCache, PayerRegistry } from '@dtr/payer';
import { BackendServicesClient } from '@dtr/smart';
import { AdminGuard } from '../admin/admin.guard.js';
import { fromServices, SmartModule } from '../smart/smart.module.js';
import { PayersAdminController, SupportedPayersController } from './payers.controller.js';

/** Payers: registry, admin API, supported-payers list, Backend Services tokens, the package cache. */
@Module({
  imports: [SmartModule],
  controllers: [SupportedPayersController, PayersAdminController],
  providers: [
    AdminGuard,
    fromServices(PayerRegistry, 'payers'),
    fromServices(BackendServicesClient, 'backendServices'),
    fromServices(PackageCache, 'packageCache'),
  ],
  exports: [PayerRegistry, BackendServicesClient, PackageCache],
})
export class PayersModule {}
