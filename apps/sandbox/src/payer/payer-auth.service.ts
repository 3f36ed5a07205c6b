import { exportJWK, generateKeyPair } from 'jose';
import type { SandboxClientConfig } from '../shared/clients.js';
import type { AccessTokenInfo } from '../shared/tokens.js';

/** Scopes the payer grants to Backend Services clients (SMART v2, plus v1 `.read`/`.write` spellings). */
const PAYER_SCOPES = [
  'system/Questionnaire.rs',
  'system/Questionnaire.r',
  'system/Library.rs',
  'system/ValueSet.rs',
  'system/QuestionnaireResponse.c',
  'system/QuestionnaireResponse.cu',
  'system/Claim.c',
  'system/DocumentReference.c',
  'system/Communication.c',
  'system/Questionnaire.read',
  'system/Library.read',
  'system/ValueSet.read',
  'system/QuestionnaireResponse.write',
  'system/*.read',
  'system/*.rs',
] as const;

export type Interaction = 'c' | 'r' | 'u' | 'd' | 's';

/**
 * Whether the granted scopes allow an interaction on a resource type; v1 `read` = `rs`, `write` = `cud`,
 * `*` = everything.
 * @see https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-fhir-resources
 */
export function scopeAllows(scopes: readonly string[], resourceType: string, interaction: Interaction): boolean {
  return scopes.some((scope) => {
    const m = /^system\/([A-Za-z]+|\*)\.([a-z]+|\*)$/.exec(scope);
    if (!m) return false;
    const [, type, perms] = m;
    if (type !== '*' && type !== resourceType) return false;
    if (perms === '*') return true;
    if (perms === 'read') return interaction === 'r' || interaction === 's';
    if (perms === 'write') return interaction === 'c' || interaction === 'u' || interaction === 'd';
    return /^c?r?u?d?s?$/.test(perms ?? '') && (perms ?? '').includes(interaction);
  });
}

/** The slice of oidc-provider used here (the package ships no type declarations). */
interface OidcProvider {
  callback(): (req: unknown, res: unknown) => void;
  on(event: string, listener: (ctx: OidcContext, err?: unknown) => void): void;
  ClientCredentials: {
    find(token: string): Promise<{ clientId?: string; scope?: string; exp?: number } | undefined>;
  };
  Client: { adapter: ClientAdapter };
}
/** oidc-provider's store of clients registered at run time (the static ones come from the configuration). */
interface ClientAdapter {
  upsert(id: string, payload: Record<string, unknown>): Promise<void>;
  destroy(id: string): Promise<void>;
}
export interface OidcContext {
  req: object;
  body?: unknown;
  oidc?: { client?: { clientId?: string }; params?: Record<string, unknown> };
}
interface OidcModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => OidcProvider;
  errors: { InvalidClientAuth: new (detail: string) => Error };
}
type ClientMetadata = Record<string, unknown>;

export interface PayerAuthorizationServer {
  provider: OidcProvider;
  tokenEndpoint: string;
  introspect(token: string): Promise<AccessTokenInfo | undefined>;
  /** Clients registered at run time (UDAP dynamic registration): added to, replaced in or removed from the provider. */
  clientStore: RuntimeClientStore;
}

export interface RuntimeClientStore {
  upsertClient(metadata: Record<string, unknown>): Promise<void>;
  removeClient(clientId: string): Promise<void>;
  /** The scopes the provider grants. */
  scopes: readonly string[];
}

/**
 * SMART Backend Services authorization server: client_credentials only, private_key_jwt (RS384/ES384),
 * client assertion `aud` must be the token endpoint; oidc-provider checks signature, exp and jti replay.
 * @see https://hl7.org/fhir/smart-app-launch/backend-services.html#authorize-the-client
 */
export async function createPayerAuthorizationServer(
  issuer: string,
  clients: SandboxClientConfig[],
  accessTokenTtlSeconds: number,
): Promise<PayerAuthorizationServer> {
  const tokenEndpoint = `${issuer}/token`;
  // The provider insists on signing keys even though client_credentials tokens here are opaque.
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: 'sandbox-payer' };

  const { default: Provider, errors } = (await import('oidc-provider' as string)) as OidcModule;
  const configuration = {
    clients: clients.map((c) => toClientMetadata(c)),
    clientAuthMethods: ['private_key_jwt', 'client_secret_basic'],
    enabledJWA: { clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256', 'PS384'] },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      introspection: { enabled: false },
      revocation: { enabled: false },
    },
    responseTypes: ['none'],
    scopes: [...PAYER_SCOPES],
    jwks: { keys: [signingKey] },
    ttl: { ClientCredentials: accessTokenTtlSeconds },
    // The SSRF guard refuses loopback jwks_uri; the sandbox's clients serve their keys on loopback.
    fetch: (url: string, options: RequestInit) => {
      const { dispatcher: _dispatcher, ...rest } = options as RequestInit & { dispatcher?: unknown };
      return globalThis.fetch(url, rest);
    },
    // SMART wants aud = the token endpoint exactly (the provider alone also accepts its issuer).
    assertJwtClientAuthClaimsAndHeader: (_ctx: unknown, claims: Record<string, unknown>) => {
      const aud = claims['aud'];
      const ok = Array.isArray(aud) ? aud.length === 1 && aud[0] === tokenEndpoint : aud === tokenEndpoint;
      if (!ok) throw new errors.InvalidClientAuth('client assertion aud must be the token endpoint');
    },
  };
  const provider = new Provider(issuer, configuration);

  return {
    provider,
    tokenEndpoint,
    clientStore: {
      upsertClient: (metadata) => provider.Client.adapter.upsert(String(metadata['client_id']), metadata),
      removeClient: (clientId) => provider.Client.adapter.destroy(clientId),
      scopes: PAYER_SCOPES,
    },
    async introspect(token) {
      const found = await provider.ClientCredentials.find(token);
      if (!found || !found.clientId || !found.exp) return undefined;
      return {
        clientId: found.clientId,
        scopes: (found.scope ?? '').split(' ').filter(Boolean),
        expiresAt: found.exp,
      };
    },
  };
}

function toClientMetadata(c: SandboxClientConfig): ClientMetadata {
  return {
    client_id: c.clientId,
    token_endpoint_auth_method: c.auth,
    ...(c.clientSecret ? { client_secret: c.clientSecret } : {}),
    ...(c.jwksUri ? { jwks_uri: c.jwksUri } : {}),
    ...(c.jwks ? { jwks: c.jwks } : {}),
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: (c.scopes ?? [...PAYER_SCOPES]).join(' '),
  };
}
