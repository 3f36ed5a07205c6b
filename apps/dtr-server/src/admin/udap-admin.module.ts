import { Module } from '@nestjs/common';
import { PayerUdapRegistration } from '@dtr/payer';
import { TenantUdapRegistration, UdapIdentityStore } from '@dtr/smart';
import { fromServices, SmartModule } from '../smart/smart.module.js';
import { AdminGuard } from './admin.guard.js';
import { UdapAdminController } from './udap.controller.js';

/** The UDAP admin API: certificates, trust anchors and registrations, from the process's composed services. */
@Module({
  imports: [SmartModule],
  controllers: [UdapAdminController],
  providers: [
    AdminGuard,
    fromServices(UdapIdentityStore, 'udapIdentities'),
    fromServices(TenantUdapRegistration, 'tenantUdap'),
    fromServices(PayerUdapRegistration, 'payerUdap'),
  ],
})
export class UdapAdminModule {}
