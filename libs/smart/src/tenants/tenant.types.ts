/** Why we hold a registration at an EHR: `supplement` (read, at launch) or `disclose` (payer-bound writes). */
export type RegistrationPurpose = 'supplement' | 'disclose';
/** `udap`: a UDAP client assertion signed with the certificate of the registration's SAN URI (x5c). */
export type ClientAuthMethod = 'client_secret_basic' | 'private_key_jwt' | 'udap';
export type SigningAlg = 'RS384' | 'ES384';
/** How payer-bound copies are authorized: a second user authorization, or SMART Backend Services. */
export type DiscloseMode = 'user-delegated' | 'system';
