export * from './package/package-response.js';
export * from './package/package-validator.js';
export * from './payer-client.js';
export * from './payer-registry.service.js';
export * from './package/package-cache.js';
export * from './package/package-retrieval.js';
export * from './mutual-tls-fetch.js';
export { RUNTIME_REPORTED } from './log-questionnaire-errors.js';
export * from './payer-udap-registration.js';
