export * from './form.types.js';
export * from './form-rules.js';
