export * from './fhir-client.js';
export * from './http-fhir-client.js';
