/** Nominal typing for identifiers that are strings at run time. */
declare const brand: unique symbol;
export type Brand<T, B extends string> = T & { readonly [brand]: B };

export type TenantId = Brand<string, 'TenantId'>;
export type PayerId = Brand<string, 'PayerId'>;
export type SessionId = Brand<string, 'SessionId'>;
export type RequestId = Brand<string, 'RequestId'>;

export const asTenantId = (value: string): TenantId => value as TenantId;
export const asPayerId = (value: string): PayerId => value as PayerId;
export const asSessionId = (value: string): SessionId => value as SessionId;
export const asRequestId = (value: string): RequestId => value as RequestId;
