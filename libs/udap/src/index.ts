export * from './udap.types.js';
export * from './certificates.js';
export * from './test-ca.js';
export * from './material.js';
