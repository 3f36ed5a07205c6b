import { randomBytes } from 'node:crypto';
import { escapeHtml } from '@dtr/kernel';
import express, { type Request, type Response } from 'express';
import { decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { EHR_PATHS, type SandboxClientConfig } from '../../shared/clients.js';
import type { PeerServer } from '../../shared/peer-server.js';
import { fingerprint, notedUdapAuthentication, type RecordedRequest } from '../../shared/request-log.js';
import type { AccessTokenInfo } from '../../shared/tokens.js';

/**
 * The sandbox EHR's SMART App Launch 2.2 authorization server, on oidc-provider: EHR launch (`launch` + `iss`),
 * standalone launch (`launch/patient` with a patient picker), confidential clients (client_secret_basic and
 * private_key_jwt RS384/ES384 from a JWKS URL), PKCE S256 required, `aud` checked against the FHIR base, RFC 9207
 * `iss` in the callback, `openid fhirUser` id_tokens (RS256), refresh tokens, launch context in the token response.
 * Dev/test only.
 * @see https://hl7.org/fhir/smart-app-launch/app-launch.html
 */
export interface EhrAuthOptions {
  peer: PeerServer;
  clients: SandboxClientConfig[];
  users: Array<{ id: string; fhirUser: string; display: string }>;
  patients: Array<{ id: string; display: string }>;
  omitIssuerInSmartConfiguration?: boolean;
  accessTokenTtlSeconds?: number;
  /** Each refresh spends the refresh token and issues a new one; presenting a spent one revokes the grant. */
  rotateRefreshTokens?: boolean;
  /**
   * Called at the login step of an authorization request that named an `idp` (UDAP Tiered OAuth): answers the browser
   * itself (true) or leaves the login to the sandbox (false).
   */
  loginWithIdp?: (req: Request, res: Response, details: InteractionDetails) => Promise<boolean>;
}

export type InteractionDetails = Awaited<ReturnType<Provider['interactionDetails']>>;

interface LaunchContextInput {
  patient: string;
  encounter?: string;
  user?: string;
  fhirContext?: Array<
    string | { reference?: string; canonical?: string; identifier?: unknown; type?: string; role?: string }
  >;
  fhirContextStyle?: '2.0-strings' | '2.1-objects';
  appContext?: string;
  needPatientBanner?: boolean;
  intent?: string;
  tenant?: string;
}

/**
 * Ways a test can make the EHR misbehave (or behave as some EHRs do), to see the client refuse or cope: in process
 * with `setMisbehaviour`, or over HTTP with `PUT /_sandbox/auth-behaviour` (the same JSON; `{}` resets).
 */
interface EhrMisbehaviour {
  /**
   * Replace the id_token in token responses: signed by a key the EHR does not publish, for another audience, or with
   * another nonce; or leave it out (`omit`, an EHR that does not do OpenID Connect).
   */
  idToken?: 'foreign-key' | 'wrong-aud' | 'wrong-nonce' | 'omit';
  /**
   * smart-configuration without OpenID Connect: `without-openid` drops `issuer`, `jwks_uri` and the
   * `sso-openid-connect` capability; `without-jwks-uri` keeps `issuer` but drops the other two. id_tokens are still
   * issued, signed with the keys at the `jwks_uri` of `{issuer}/.well-known/openid-configuration`.
   */
  smartConfiguration?: 'without-openid' | 'without-jwks-uri';
  /** Put this value in the RFC 9207 `iss` parameter of authorization responses. */
  callbackIss?: string;
  /** Claim in token responses to have granted this scope too (a server granting more than was asked). */
  extraGrantedScope?: string;
}

export interface EhrAuthServer {
  issuer: string;
  setMisbehaviour(misbehaviour: EhrMisbehaviour): void;
  fhirBase: string;
  introspect(token: string): Promise<AccessTokenInfo | undefined>;
  createLaunch(ctx: LaunchContextInput): string;
  issuedTokenFingerprints(): Set<string>;
  /** Test-only: every access token, refresh token, id_token and authorization code issued so far, raw. */
  issuedSecrets(): string[];
  /** The scopes granted in each token response to this client, in order (what the EHR really gave). */
  grantedScopes(clientId: string): string[][];
  /** Clients registered at run time (UDAP dynamic registration): added to, replaced in or removed from the provider. */
  clientStore: {
    upsertClient(metadata: Record<string, unknown>): Promise<void>;
    removeClient(clientId: string): Promise<void>;
    scopes: readonly string[];
  };
  /** Ends an interaction with a login (the Tiered OAuth callback, once the IdP has authenticated the user). */
  finishLogin(req: Request, res: Response, accountId: string): Promise<void>;
  /** Ends an interaction with an error sent to the app's redirect URI (e.g. Tiered OAuth's `invalid_idp`). */
  finishWithError(req: Request, res: Response, error: string, description: string): Promise<void>;
  close(): Promise<void>;
}

interface Provider {
  callback(): (req: unknown, res: unknown) => void;
  use(middleware: (ctx: KoaContext, next: () => Promise<void>) => Promise<void>): void;
  interactionDetails(
    req: unknown,
    res: unknown,
  ): Promise<{
    uid: string;
    prompt: { name: string; details: Record<string, unknown> };
    params: Record<string, unknown>;
    session?: { accountId?: string; uid?: string };
    grantId?: string;
  }>;
  interactionFinished(
    req: unknown,
    res: unknown,
    result: Record<string, unknown>,
    options?: Record<string, unknown>,
  ): Promise<void>;
  Grant: new (init: { accountId: string; clientId: string }) => {
    addOIDCScope(scope: string): void;
    addResourceScope(resource: string, scope: string): void;
    save(): Promise<string>;
  };
  AccessToken: TokenModel;
  /** Backend Services (client_credentials) tokens live in their own model. */
  ClientCredentials: TokenModel;
  Client: {
    adapter: {
      upsert(id: string, payload: Record<string, unknown>): Promise<void>;
      destroy(id: string): Promise<void>;
    };
  };
  on(event: string, listener: (...args: unknown[]) => void): void;
}

interface TokenModel {
  find(token: string): Promise<
    | {
        clientId?: string;
        scope?: string;
        exp?: number;
        accountId?: string;
        grantId?: string;
        aud?: string | string[];
      }
    | undefined
  >;
}

interface KoaContext {
  path: string;
  method: string;
  body?: unknown;
  status?: number;
  oidc?: { params?: Record<string, unknown> };
  req: { sandboxGrant?: RecordedRequest['grant'] };
}

/**
 * The SMART resource scopes this EHR grants (v1 and v2, patient/user/system). oidc-provider only issues scopes it
 * knows by name, so they are listed: every level × the resource types DTR uses (and `*`) × the usual permissions.
 */
const SCOPE_TYPES = [
  '*',
  'Patient',
  'Practitioner',
  'PractitionerRole',
  'Organization',
  'Location',
  'Encounter',
  'Coverage',
  'Condition',
  'Observation',
  'Procedure',
  'DeviceRequest',
  'ServiceRequest',
  'MedicationRequest',
  'MedicationStatement',
  'Medication',
  'NutritionOrder',
  'QuestionnaireResponse',
  'Questionnaire',
  'DocumentReference',
  'Provenance',
  'Consent',
  'DiagnosticReport',
  'AllergyIntolerance',
  'Communication',
  'Claim',
];
const SCOPE_PERMISSIONS = [
  'read',
  'write',
  '*',
  'r',
  's',
  'rs',
  'c',
  'u',
  'd',
  'cu',
  'cru',
  'cruds',
  'crus',
  'ru',
  'rus',
];
const SMART_RESOURCE_SCOPES = ['patient', 'user', 'system'].flatMap((level) =>
  SCOPE_TYPES.flatMap((type) => SCOPE_PERMISSIONS.map((perm) => `${level}/${type}.${perm}`)),
);
/** Every scope the EHR grants; `udap` asks for UDAP Tiered OAuth (with `idp`). */
const EHR_SCOPES = [
  'openid',
  'fhirUser',
  'launch',
  'launch/patient',
  'launch/encounter',
  'offline_access',
  'online_access',
  'udap',
  ...SMART_RESOURCE_SCOPES,
];

/** What the parts of the sandbox EHR's authorization server share. */
interface AuthState {
  options: EhrAuthOptions;
  issuer: string;
  fhirBase: string;
  tokenEndpoint: string;
  launches: Map<string, LaunchContextInput>;
  contexts: Map<string, LaunchContextInput & { fhirUser?: string }>;
  /**
   * The patient open in each browser session (like an EHR's chart): a later `launch/patient` request from the same
   * signed-in browser gets it without a picker (single sign-on).
   */
  currentPatient: Map<string, string>;
  issued: Set<string>;
  secrets: Set<string>;
  granted: Array<{ clientId: string; scopes: string[] }>;
  misbehaviour: EhrMisbehaviour;
  userById: Map<string, EhrAuthOptions['users'][number]>;
  keys: {
    privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
    foreign: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  };
}

type ProviderErrors = {
  InvalidClientAuth: new (detail: string) => Error;
  InvalidRequest: new (detail: string) => Error;
};

export async function createEhrAuthServer(options: EhrAuthOptions): Promise<EhrAuthServer> {
  const { peer } = options;
  const issuer = `${peer.origin}${EHR_PATHS.auth}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const foreign = await generateKeyPair('RS256');
  const state: AuthState = {
    options,
    issuer,
    fhirBase: `${peer.origin}${EHR_PATHS.fhir}`,
    tokenEndpoint: `${issuer}/token`,
    launches: new Map(),
    contexts: new Map(),
    currentPatient: new Map(),
    issued: new Set(),
    secrets: new Set(),
    granted: [],
    misbehaviour: {},
    userById: new Map(options.users.map((u) => [u.id, u])),
    keys: { privateKey, foreign: foreign.privateKey },
  };
  const signingKey = { ...(await exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: 'sandbox-ehr' };
  const { default: ProviderClass, errors } = (await import('oidc-provider' as string)) as {
    default: new (issuer: string, configuration: Record<string, unknown>) => Provider;
    errors: ProviderErrors;
  };
  const provider = new ProviderClass(issuer, providerConfiguration(state, signingKey, errors));
  provider.use(async (ctx, next) => {
    // SMART: `aud` must name this FHIR server; refused before anything else.
    if (!audienceOk(ctx, state)) return;
    await next();
    recordGrant(ctx);
    recordSecretsAndRedirect(ctx, state);
    if (ctx.path.endsWith('/token') && ctx.method === 'POST' && ctx.body && typeof ctx.body === 'object')
      await shapeTokenResponse(ctx, ctx.body as Record<string, unknown>, provider, state);
  });
  mountSmartConfiguration(peer, state);
  return mountEndpoints(peer, provider, state);
}

function providerConfiguration(
  state: AuthState,
  signingKey: Record<string, unknown>,
  errors: ProviderErrors,
): Record<string, unknown> {
  const { options, fhirBase, userById, tokenEndpoint } = state;
  return {
    clients: options.clients.map((c) => ({
      client_id: c.clientId,
      token_endpoint_auth_method: c.auth,
      ...(c.clientSecret ? { client_secret: c.clientSecret } : {}),
      ...(c.jwksUri ? { jwks_uri: c.jwksUri } : {}),
      ...(c.jwks ? { jwks: c.jwks } : {}),
      grant_types: c.grantTypes ?? ['authorization_code', 'refresh_token'],
      response_types: (c.grantTypes ?? ['authorization_code']).includes('authorization_code') ? ['code'] : [],
      redirect_uris: c.redirectUris ?? [],
    })),
    clientAuthMethods: ['private_key_jwt', 'client_secret_basic'],
    enabledJWA: { clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256'] },
    jwks: { keys: [signingKey] },
    pkce: { required: () => true, methods: ['S256'] },
    extraParams: ['launch', 'aud', 'sandbox_patient', 'idp'],
    scopes: EHR_SCOPES,
    claims: { fhirUser: ['fhirUser'], openid: ['sub'] },
    conformIdTokenClaims: false,
    findAccount: async (_ctx: unknown, id: string) => ({
      accountId: id,
      claims: async () => ({ sub: id, fhirUser: `${fhirBase}/${userById.get(id)?.fhirUser ?? `Practitioner/${id}`}` }),
    }),
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: { enabled: false },
    },
    rotateRefreshToken: () => state.options.rotateRefreshTokens === true,
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(g: string): boolean }) =>
      client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: options.accessTokenTtlSeconds ?? 300,
      AuthorizationCode: 60,
      RefreshToken: 86_400,
      IdToken: 300,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      ClientCredentials: options.accessTokenTtlSeconds ?? 300,
    },
    interactions: {
      url: (_ctx: unknown, interaction: { uid: string }) => `${EHR_PATHS.auth}/interaction/${interaction.uid}`,
    },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    fetch: (url: string, init: RequestInit) => {
      // The SSRF guard refuses loopback jwks_uri; sandbox clients serve their keys on loopback.
      const { dispatcher: _d, ...rest } = init as RequestInit & { dispatcher?: unknown };
      return globalThis.fetch(url, rest);
    },
    assertJwtClientAuthClaimsAndHeader: (
      _ctx: unknown,
      claims: Record<string, unknown>,
      header: Record<string, unknown>,
    ) => {
      const aud = claims['aud'];
      const ok = Array.isArray(aud) ? aud.length === 1 && aud[0] === tokenEndpoint : aud === tokenEndpoint;
      if (!ok) throw new errors.InvalidClientAuth('client assertion aud must be the token endpoint');
      if (header['typ'] !== undefined && header['typ'] !== 'JWT')
        throw new errors.InvalidClientAuth('client assertion typ must be JWT');
    },
  };
}

/** For the request log: which grant a token request made, and which refresh token it presented (fingerprinted). */
function recordGrant(ctx: KoaContext): void {
  const params = ctx.oidc?.params;
  if (!ctx.path.endsWith('/token') || typeof params?.['grant_type'] !== 'string') return;
  const refresh = params['refresh_token'];
  ctx.req.sandboxGrant = {
    type: params['grant_type'],
    ...(typeof refresh === 'string' ? { refreshTokenFingerprint: fingerprint(refresh) } : {}),
  };
}

/** SMART requires `aud` on every authorization request, naming this FHIR server. */
function audienceOk(ctx: KoaContext, state: AuthState): boolean {
  if (ctx.path === '/auth' || ctx.path.endsWith('/auth')) {
    const url = new URL(`http://x${(ctx as unknown as { url: string }).url}`);
    const aud = url.searchParams.get('aud');
    if (url.pathname.endsWith('/auth') && (aud === null || aud.replace(/\/+$/, '') !== state.fhirBase)) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_request', error_description: 'aud must be the FHIR base URL of this server' };
      return false;
    }
  }
  return true;
}

function recordSecretsAndRedirect(ctx: KoaContext, state: AuthState): void {
  const { secrets, misbehaviour } = state;
  // Every secret this server hands out is remembered raw, so tests can look for it anywhere it must not be.
  const redirect = (ctx as unknown as { response: { get(h: string): string } }).response.get('location');
  const code = redirect ? /[?&#]code=([^&#]+)/.exec(redirect)?.[1] : undefined;
  if (code) secrets.add(decodeURIComponent(code));
  if (misbehaviour.callbackIss && ctx.status === 303) {
    const location = (ctx as unknown as { response: { get(h: string): string; set(h: string, v: string): void } })
      .response;
    const target = location.get('location');
    if (target?.includes('iss=')) {
      const url = new URL(target);
      url.searchParams.set('iss', misbehaviour.callbackIss);
      location.set('location', url.toString());
    }
  }
}

/** Token responses: id_token misbehaviour, registered scopes enforced, launch context and SMART fields added. */
async function shapeTokenResponse(
  ctx: KoaContext,
  body: Record<string, unknown>,
  provider: Provider,
  state: AuthState,
): Promise<void> {
  const { misbehaviour, options, granted, secrets, issued, contexts } = state;
  const { privateKey, foreign } = state.keys;
  const token = body['access_token'];
  if (misbehaviour.idToken === 'omit') delete body['id_token'];
  if (misbehaviour.idToken && misbehaviour.idToken !== 'omit' && typeof body['id_token'] === 'string') {
    const claims = decodeJwt(body['id_token']);
    const forged = { ...claims } as Record<string, unknown>;
    if (misbehaviour.idToken === 'wrong-aud') forged['aud'] = 'someone-else';
    if (misbehaviour.idToken === 'wrong-nonce') forged['nonce'] = 'not-the-nonce';
    body['id_token'] = await new SignJWT(forged)
      .setProtectedHeader({ alg: 'RS256', kid: 'sandbox-ehr' })
      .sign(misbehaviour.idToken === 'foreign-key' ? foreign : privateKey);
  }
  const client = (ctx as unknown as { oidc?: { client?: { clientId?: string } } }).oidc?.client?.clientId;
  const registered = options.clients.find((c) => c.clientId === client)?.scopes;
  const beyond =
    registered && typeof body['scope'] === 'string'
      ? body['scope'].split(' ').filter((scope) => scope && !registered.includes(scope))
      : [];
  // A client is only ever granted the scopes it is registered for; asking for more is refused.
  if (beyond.length > 0) {
    ctx.status = 400;
    ctx.body = {
      error: 'invalid_scope',
      error_description: `client ${client} is not registered for ${beyond.join(' ')}`,
    };
    return;
  }
  if (misbehaviour.extraGrantedScope && typeof body['scope'] === 'string')
    body['scope'] = `${body['scope']} ${misbehaviour.extraGrantedScope}`;
  if (client && typeof body['scope'] === 'string')
    granted.push({ clientId: client, scopes: body['scope'].split(' ').filter(Boolean) });
  for (const field of ['access_token', 'refresh_token', 'id_token'])
    if (typeof body[field] === 'string') secrets.add(body[field]);
  if (typeof token === 'string') {
    issued.add(fingerprint(token));
    const found = await provider.AccessToken.find(token);
    const launch = found?.grantId ? contexts.get(found.grantId) : undefined;
    if (launch) {
      body['patient'] = launch.patient;
      if (launch.encounter) body['encounter'] = launch.encounter;
      if (launch.fhirContext) {
        body['fhirContext'] =
          launch.fhirContextStyle === '2.0-strings'
            ? launch.fhirContext.map((c) => (typeof c === 'string' ? c : (c.reference ?? c.canonical ?? '')))
            : launch.fhirContext.map((c) => (typeof c === 'string' ? { reference: c } : c));
      }
      body['need_patient_banner'] = launch.needPatientBanner ?? true;
      if (launch.intent) body['intent'] = launch.intent;
      if (launch.tenant) body['tenant'] = launch.tenant;
      if (launch.appContext) body['appContext'] = launch.appContext;
    }
  }
}

/** Interactions: automatic login (the launch's user, else the first user), the standalone patient picker, consent. */
function interactionRouter(provider: Provider, state: AuthState): express.Router {
  const { options, launches, currentPatient } = state;
  const finishConsent = (
    req: Request,
    res: Response,
    details: Awaited<ReturnType<Provider['interactionDetails']>>,
    context: LaunchContextInput | undefined,
  ) => completeConsent(provider, state, req, res, details, context);
  const interaction = express.Router();
  interaction.get('/interaction/:uid', async (req: Request, res: Response) => {
    try {
      const details = await provider.interactionDetails(req, res);
      const params = details.params;
      const scopes = String(params['scope'] ?? '').split(' ');
      const launchId = typeof params['launch'] === 'string' ? params['launch'] : undefined;
      const launch = launchId ? launches.get(launchId) : undefined;
      if (details.prompt.name === 'login') {
        if (scopes.includes('launch') && !launch) {
          res.status(400).type('text/plain').send('unknown launch');
          return;
        }
        if (typeof params['idp'] === 'string' && scopes.includes('udap') && options.loginWithIdp) {
          if (await options.loginWithIdp(req, res, details)) return;
        }
        const userId = launch?.user ?? options.users[0]?.id ?? 'sandbox-user';
        await provider.interactionFinished(
          req,
          res,
          { login: { accountId: userId } },
          { mergeWithLastSubmission: false },
        );
        return;
      }
      let context = launch;
      if (!context && scopes.includes('launch/patient')) {
        const open = details.session?.uid ? currentPatient.get(details.session.uid) : undefined;
        const preselected = typeof params['sandbox_patient'] === 'string' ? params['sandbox_patient'] : open;
        if (!preselected) {
          const items = options.patients
            .map(
              (p) =>
                `<li><form method="post" action="${EHR_PATHS.auth}/interaction/${details.uid}/patient"><input type="hidden" name="patient" value="${escapeHtml(p.id)}"><button type="submit">${escapeHtml(p.display)}</button></form></li>`,
            )
            .join('');
          res
            .type('text/html')
            .send(
              `<!doctype html><html><head><title>Select a patient</title></head><body><h1>Select a patient</h1><ul>${items}</ul></body></html>`,
            );
          return;
        }
        context = { patient: preselected };
      }
      await finishConsent(req, res, details, context);
    } catch (error) {
      res
        .status(400)
        .type('text/plain')
        .send(error instanceof Error ? error.message : 'interaction failed');
    }
  });
  interaction.post(
    '/interaction/:uid/patient',
    express.urlencoded({ extended: false }),
    async (req: Request, res: Response) => {
      try {
        const details = await provider.interactionDetails(req, res);
        const patient = String((req.body as Record<string, unknown>)['patient'] ?? '');
        if (!options.patients.some((p) => p.id === patient)) {
          res.status(400).type('text/plain').send('unknown patient');
          return;
        }
        await finishConsent(req, res, details, { patient });
      } catch (error) {
        res
          .status(400)
          .type('text/plain')
          .send(error instanceof Error ? error.message : 'interaction failed');
      }
    },
  );

  return interaction;
}

async function completeConsent(
  provider: Provider,
  state: AuthState,
  req: Request,
  res: Response,
  details: Awaited<ReturnType<Provider['interactionDetails']>>,
  context: LaunchContextInput | undefined,
): Promise<void> {
  const { options, contexts, currentPatient, userById } = state;
  const accountId = details.session?.accountId ?? options.users[0]?.id ?? 'sandbox-user';
  const grant = new provider.Grant({ accountId, clientId: String(details.params['client_id']) });
  for (const scope of String(details.params['scope'] ?? '')
    .split(' ')
    .filter(Boolean))
    grant.addOIDCScope(scope);
  const grantId = await grant.save();
  if (context) contexts.set(grantId, { ...context, fhirUser: userById.get(accountId)?.fhirUser });
  if (context?.patient && details.session?.uid) currentPatient.set(details.session.uid, context.patient);
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

/** smart-configuration at the FHIR base. */
function mountSmartConfiguration(peer: PeerServer, state: AuthState): void {
  const { options, issuer, tokenEndpoint } = state;
  peer.app.get(EHR_PATHS.smartConfiguration, (_req: Request, res: Response) => {
    const shape = state.misbehaviour.smartConfiguration;
    const withoutIssuer = options.omitIssuerInSmartConfiguration || shape === 'without-openid';
    const openId = !withoutIssuer && shape !== 'without-jwks-uri';
    res.json({
      ...(withoutIssuer ? {} : { issuer }),
      ...(openId ? { jwks_uri: `${issuer}/jwks` } : {}),
      authorization_endpoint: `${issuer}/auth`,
      token_endpoint: tokenEndpoint,
      revocation_endpoint: `${issuer}/token/revocation`,
      grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
      scopes_supported: [
        'openid',
        'fhirUser',
        'launch',
        'launch/patient',
        'offline_access',
        'patient/*.rs',
        'user/*.rs',
        'user/*.cruds',
        'system/*.rs',
      ],
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      authorization_response_iss_parameter_supported: true,
      capabilities: [
        'launch-ehr',
        'launch-standalone',
        'client-confidential-symmetric',
        'client-confidential-asymmetric',
        'context-ehr-patient',
        'context-standalone-patient',
        'permission-offline',
        'permission-patient',
        'permission-user',
        'permission-v1',
        'permission-v2',
        ...(openId ? ['sso-openid-connect'] : []),
        'authorize-post',
      ],
    });
  });
}

/** The launch-creation control, the interactions and the provider's endpoints; the server's handle. */
function mountEndpoints(peer: PeerServer, provider: Provider, state: AuthState): EhrAuthServer {
  const { options, issuer, fhirBase, launches, contexts, issued, secrets, granted } = state;
  const interaction = interactionRouter(provider, state);
  peer.app.post(EHR_PATHS.launches, express.json(), (req: Request, res: Response) => {
    const body = (req.body ?? {}) as LaunchContextInput;
    if (typeof body.patient !== 'string' || !options.patients.some((p) => p.id === body.patient)) {
      res.status(400).json({ error: 'patient must be a known patient id' });
      return;
    }
    res.json({ launch: createLaunch(body) });
  });
  peer.app.put('/_sandbox/auth-behaviour', express.json(), (req: Request, res: Response) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const allowed: Record<string, unknown[]> = {
      idToken: ['foreign-key', 'wrong-aud', 'wrong-nonce', 'omit'],
      smartConfiguration: ['without-openid', 'without-jwks-uri'],
    };
    const wrong = Object.entries(body).filter(([k, v]) =>
      !(k in allowed) ? k !== 'callbackIss' && k !== 'extraGrantedScope' : !allowed[k]!.includes(v),
    );
    if (wrong.length > 0) {
      res.status(400).json({ error: `unknown behaviour ${wrong.map(([k]) => k).join(', ')}` });
      return;
    }
    state.misbehaviour = { ...(body as EhrMisbehaviour) };
    res.json(state.misbehaviour);
  });
  peer.app.use(EHR_PATHS.auth, interaction);
  const callback = provider.callback();
  peer.app.use(EHR_PATHS.auth, (req: Request, res: Response) => {
    const entry = peer.log.start({
      method: req.method,
      path: `${EHR_PATHS.auth}${req.path}`,
      query: req.query as Record<string, string>,
    });
    res.once('finish', () => {
      entry.status = res.statusCode;
      const grant = (req as Request & { sandboxGrant?: RecordedRequest['grant'] }).sandboxGrant;
      if (grant) entry.grant = grant;
      const udap = notedUdapAuthentication(res.locals);
      if (udap) entry.udapAuthentication = udap;
    });
    callback(req, res);
  });

  function createLaunch(ctx: LaunchContextInput): string {
    const id = randomBytes(16).toString('base64url');
    launches.set(id, ctx);
    return id;
  }

  return {
    issuer,
    fhirBase,
    createLaunch,
    issuedTokenFingerprints: () => new Set(issued),
    issuedSecrets: () => [...secrets],
    grantedScopes: (clientId) => granted.filter((g) => g.clientId === clientId).map((g) => g.scopes),
    clientStore: {
      upsertClient: (metadata) => provider.Client.adapter.upsert(String(metadata['client_id']), metadata),
      removeClient: (clientId) => provider.Client.adapter.destroy(clientId),
      scopes: EHR_SCOPES,
    },
    finishLogin: (req, res, accountId) =>
      provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false }),
    finishWithError: (req, res, error, description) =>
      provider.interactionFinished(
        req,
        res,
        { error, error_description: description },
        { mergeWithLastSubmission: false },
      ),
    setMisbehaviour(next) {
      state.misbehaviour = { ...next };
    },
    async introspect(token) {
      const found = (await provider.AccessToken.find(token)) ?? (await provider.ClientCredentials.find(token));
      if (!found?.clientId || !found.exp || found.exp * 1000 < Date.now()) return undefined;
      const context = found.grantId ? contexts.get(found.grantId) : undefined;
      return {
        clientId: found.clientId,
        scopes: (found.scope ?? '').split(' ').filter(Boolean),
        ...(context?.patient ? { patient: context.patient } : {}),
        ...(context?.encounter ? { encounter: context.encounter } : {}),
        ...(context?.fhirUser ? { fhirUser: context.fhirUser } : {}),
        audience: fhirBase,
        expiresAt: found.exp,
      };
    },
    async close() {
      launches.clear();
      contexts.clear();
    },
  };
}
