export * from './audit-event.js';
export * from './audit-log.js';
