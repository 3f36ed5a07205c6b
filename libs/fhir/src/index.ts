export * from './fhir-client.js';
export * from './http-fhir-client.js';
export * from './questionnaire-package.js';
export * from './questionnaire-expressions.js';
export * from './reference.js';
export * from './cql-compiler.js';
export * from './ig-versions.js';
