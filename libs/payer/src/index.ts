export * from './package/package-response.js';
export * from './package/package-validator.js';
export * from './package/questionnaire-package.js';
