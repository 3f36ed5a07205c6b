export * from './udap.types.js';
export * from './certificates.js';
export * from './test-ca.js';
export * from './material.js';
export * from './registration.js';
export * from './client-auth.js';
export * from './discovery.js';
