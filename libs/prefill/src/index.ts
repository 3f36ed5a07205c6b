export * from './cql-runtime.js';
export * from './elm-requirements.js';
export * from './patient-data-reader.js';
export * from './answers.js';
export * from './prefill.engine.js';
export * from './fhir-client-reader.js';
export * from './prefill-session.js';
