export * from './form.types.js';
export * from './form-rules.js';
export { shapeResponse } from './response-shape.js';
export { pageQuestionnaire, type ServerOnlyRule } from './browser-rules.js';
