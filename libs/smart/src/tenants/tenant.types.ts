/** Why we hold a registration at an EHR: `supplement` (read, at launch) or `disclose` (payer-bound writes). */
export type RegistrationPurpose = 'supplement' | 'disclose';
export type ClientAuthMethod = 'client_secret_basic' | 'private_key_jwt';
export type SigningAlg = 'RS384' | 'ES384';
/** How payer-bound copies are authorized: a second user authorization, or SMART Backend Services. */
export type DiscloseMode = 'user-delegated' | 'system';
