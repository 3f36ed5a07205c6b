export * from './launch-context.js';
export * from './outbound-policy.js';
export * from './smart-configuration.js';
