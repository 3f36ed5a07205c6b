export * from './outbox.js';
export * from './payer-copy.js';
export * from './payer-routes.js';
export * from './sensitivity.js';
export * from './submission.repository.js';
