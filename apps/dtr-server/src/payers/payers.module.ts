import { Module } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import { PayerRegistry } from '@dtr/payer';
import { Clock } from '@dtr/kernel';
import { BackendServicesClient, ClientKeyProvider, type OutboundPolicy, SecretBox } from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { AdminGuard } from '../admin/admin.guard.js';
import { OUTBOUND_POLICY, SmartModule } from '../smart/smart.module.js';
import { PayersAdminController, SupportedPayersController } from './payers.controller.js';

/** Payers: registry, admin API, supported-payers list, Backend Services tokens. */
@Module({
  imports: [SmartModule],
  controllers: [SupportedPayersController, PayersAdminController],
  providers: [
    AdminGuard,
    {
      provide: PayerRegistry,
      inject: [getDataSourceToken(), OUTBOUND_POLICY, SecretBox],
      useFactory: (ds: DataSource, policy: OutboundPolicy, box: SecretBox) => new PayerRegistry(ds, policy, box),
    },
    {
      provide: BackendServicesClient,
      inject: [ClientKeyProvider, OUTBOUND_POLICY, Clock],
      useFactory: (keys: ClientKeyProvider, policy: OutboundPolicy, clock: Clock) =>
        new BackendServicesClient(keys, policy, clock),
    },
  ],
  exports: [PayerRegistry, BackendServicesClient],
})
export class PayersModule {}
