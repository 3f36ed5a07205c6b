export * from './package/package-response.js';
export * from './package/package-validator.js';
