export * from './form.types.js';
export * from './form-rules.js';
export { INTENDED_USE, QR_CONTEXT, QR_COVERAGE, QR_PROFILE, shapeResponse } from './response-shape.js';
