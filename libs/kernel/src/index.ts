export * from './clock.js';
export * from './dtr-error.js';
export * from './safe-json.js';
export * from './settings.js';
export * from './safe-html.js';
