export * from './launch-context.js';
export * from './outbound-policy.js';
export * from './secret-box.js';
export * from './smart-client.js';
export * from './smart-configuration.js';
export * from './tenants/ehr-registration.entity.js';
export * from './tenants/ehr-tenant.entity.js';
export * from './tenants/tenant-registry.service.js';
