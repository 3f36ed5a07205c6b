import * as oidc from 'openid-client';
import { Clock, DtrError } from '@dtr/kernel';
import type { DataSource } from 'typeorm';
import { sameHash, sha256 } from '../hashing.js';
import { type LaunchContext, parseLaunchContext } from '../launch-context.js';
import { SecretBox } from '../secret-box.js';
import type { SessionRecord, SessionStore, TokenSet } from '../sessions/session-store.js';
import { smartClientConfiguration, type SmartClientOptions } from '../smart-client.js';
import type { SmartConfiguration, SmartDiscovery } from '../smart-configuration.js';
import { IdTokenVerifier } from './id-token.js';
import type { RegistrationPurpose } from '../tenants/tenant.types.js';
import type { RegistrationCredentials, TenantRegistry, TenantView } from '../tenants/tenant-registry.service.js';
import { LaunchAttemptRepository, type LaunchKind } from './launch-attempt.repository.js';

export interface LaunchServiceOptions extends SmartClientOptions {
  /** How long a started authorization may take to come back. */
  attemptTtlMs?: number;
  sessionTtlMs?: number;
  /** UDAP discovery (checked signed metadata), for Tiered OAuth: asked only for tenants with a `udapIdp`. */
  udapDiscovery?: { discoverCached(baseUrl: string, community?: string): Promise<{ profiles: string[] }> };
  /** Told once per tenant and reason why a tenant's Tiered OAuth identity provider was not sent (for the log). */
  onTieredOAuthSkipped?: (tenantId: string, reason: string) => void;
}

export interface StartedAuthorization {
  /** Where to send the browser. */
  authorizationUrl: string;
  tenantId: string;
  /** Origins the tenant lets frame the app (its cookies and frame policy depend on it); empty: none. */
  frameAncestors: string[];
}

export interface CompletedLaunch {
  /** New opaque session id for the cookie (the pre-login binding is discarded: the id rotates). */
  sessionId: string;
  session: SessionRecord;
}

const stateAad = (stateHash: string) => `launch_attempt:${stateHash}`;

/** The longest `launch` value accepted from an EHR (SMART does not bound it; launchers send JWTs of over 1 KiB). */
const MAX_LAUNCH_CHARS = 8192;
/**
 * The SMART App Launch flows of a confidential client:
 * - EHR launch (`launch` + `iss`) and standalone launch (`launch/patient`) with the `supplement` registration;
 * - the user-delegated `disclose` authorization (a second code flow with the `disclose` registration, refused
 *   when it comes back for a different patient or user).
 * PKCE S256 always; `state` (256 bits) stored hashed, single use, bound to the browser and to the issuer and token
 * endpoint it was created for (mix-up defense); `nonce` checked in the id_token; RFC 9207 `iss` checked when the
 * server advertises it.
 * @see https://hl7.org/fhir/smart-app-launch/app-launch.html
 */
export class LaunchService {
  private readonly attemptTtlMs: number;
  private readonly sessionTtlMs: number;
  private readonly attempts: LaunchAttemptRepository;
  private readonly idTokens: IdTokenVerifier;

  constructor(
    dataSource: DataSource,
    private readonly tenants: TenantRegistry,
    private readonly discovery: SmartDiscovery,
    private readonly sessions: SessionStore,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
    private readonly options: LaunchServiceOptions,
  ) {
    this.attemptTtlMs = options.attemptTtlMs ?? 10 * 60 * 1000;
    this.sessionTtlMs = options.sessionTtlMs ?? 8 * 60 * 60 * 1000;
    this.attempts = new LaunchAttemptRepository(dataSource);
    this.idTokens = new IdTokenVerifier(options.policy, clock, options.fetch, options.timeoutMs);
  }

  /** EHR launch: `iss` must be a registered tenant; nothing is fetched from an unknown one. */
  async startEhrLaunch(iss: string, launch: string, browserBinding: string): Promise<StartedAuthorization> {
    // EHRs send opaque handles or whole signed JWTs (an inline-JWKS launch is over 1 KiB): up to 8 KiB is taken.
    if (!launch) throw new DtrError('INVALID_INPUT', 'the launch parameter is missing');
    if (launch.length > MAX_LAUNCH_CHARS)
      throw new DtrError(
        'INVALID_INPUT',
        `the launch parameter is ${launch.length} characters long; at most ${MAX_LAUNCH_CHARS} (8 KiB) are accepted`,
      );
    const tenant = await this.tenants.findByFhirBase(iss);
    if (!tenant) {
      const line = iss.replace(/[\u0000-\u001f\u007f]/g, '?');
      const shown = line.length > 300 ? `${line.slice(0, 300)}…` : line;
      throw new DtrError(
        'FORBIDDEN',
        `this EHR (iss ${shown}) is not registered with this DTR service; a registered FHIR base must match it exactly (https vs http, localhost vs 127.0.0.1, port, path)`,
      );
    }
    return this.start(tenant, 'ehr', 'supplement', browserBinding, { launch });
  }

  /** Standalone launch for a registered tenant: the EHR asks the user to pick a patient. */
  async startStandaloneLaunch(tenantId: string, browserBinding: string): Promise<StartedAuthorization> {
    const tenant = await this.tenants.get(tenantId);
    if (!tenant) throw new DtrError('NOT_FOUND', 'no such EHR tenant');
    return this.start(tenant, 'standalone', 'supplement', browserBinding, {});
  }

  /** Second authorization with the `disclose` registration, for a signed-in session (user-delegated mode). */
  async startDisclose(session: SessionRecord, browserBinding: string): Promise<StartedAuthorization> {
    const tenant = await this.tenants.get(session.tenantId);
    if (!tenant) throw new DtrError('NOT_FOUND', 'the session tenant no longer exists');
    if (tenant.discloseMode !== 'user-delegated') {
      throw new DtrError('CONFLICT', 'this EHR uses system-level disclosure; no second authorization is needed');
    }
    return this.start(tenant, 'disclose', 'disclose', browserBinding, { sessionIdHash: session.idHash });
  }

  /**
   * The origin of the tenant's authorization endpoint (from its cached SMART configuration), for the CSP of a page
   * whose form starts an authorization there; undefined when the tenant or its configuration cannot be had now.
   */
  async authorizationOrigin(tenantId: string): Promise<string | undefined> {
    try {
      const tenant = await this.tenants.get(tenantId);
      if (!tenant) return undefined;
      return new URL((await this.discovery.get(tenant.fhirBase)).authorization_endpoint).origin;
    } catch {
      return undefined;
    }
  }

  private async start(
    tenant: TenantView,
    kind: LaunchKind,
    purpose: RegistrationPurpose,
    browserBinding: string,
    extra: { launch?: string; sessionIdHash?: string },
  ): Promise<StartedAuthorization> {
    const smart = await this.discovery.get(tenant.fhirBase);
    const credentials = await this.tenants.credentialsFor(tenant.id, purpose);
    const config = await smartClientConfiguration(smart, credentials, this.options);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const stateHash = sha256(state);
    await this.attempts.insert({
      state_hash: stateHash,
      tenant_id: tenant.id,
      purpose: credentials.purpose,
      kind,
      fhir_base: tenant.fhirBase,
      issuer: smart.issuer ?? null,
      token_endpoint: smart.token_endpoint,
      code_verifier_enc: this.secrets.seal(JSON.stringify({ verifier, nonce }), stateAad(stateHash)),
      nonce_hash: sha256(nonce),
      browser_binding_hash: sha256(browserBinding),
      session_id_hash: extra.sessionIdHash ?? null,
      expires_at: new Date(this.clock.now().getTime() + this.attemptTtlMs),
    });
    const idp = await this.tieredOAuthIdp(tenant, credentials);
    const scope = scopesFor(kind, credentials);
    const params: Record<string, string> = {
      response_type: 'code',
      redirect_uri: credentials.redirectUri,
      scope: idp ? `${scope} udap` : scope,
      ...(idp ? { idp } : {}),
      state,
      aud: tenant.fhirBase,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      ...(extra.launch ? { launch: extra.launch } : {}),
      nonce,
    };
    return {
      authorizationUrl: oidc.buildAuthorizationUrl(config, params).toString(),
      tenantId: tenant.id,
      frameAncestors: tenant.frameAncestors,
    };
  }

  private readonly tieredOAuthNotices = new Set<string>();

  /**
   * UDAP Tiered OAuth: the tenant's identity provider, when it has one and the EHR's checked UDAP metadata lists
   * `udap_to`; otherwise undefined (the launch goes on without it, and the reason is told once per tenant).
   * @see https://hl7.org/fhir/us/udap-security/user.html
   */
  private async tieredOAuthIdp(tenant: TenantView, credentials: RegistrationCredentials): Promise<string | undefined> {
    if (!tenant.udapIdp) return undefined;
    let reason: string;
    if (!this.options.udapDiscovery) {
      reason = 'UDAP discovery is not configured in this process';
    } else {
      try {
        const server = await this.options.udapDiscovery.discoverCached(tenant.fhirBase, credentials.udapCommunity);
        if (server.profiles.includes('udap_to')) return tenant.udapIdp;
        reason = 'the EHR does not list udap_to in udap_profiles_supported';
      } catch (error) {
        reason = `the EHR's UDAP metadata could not be used: ${error instanceof Error ? error.message : 'unknown error'}`;
      }
    }
    const key = `${tenant.id}|${reason}`;
    if (!this.tieredOAuthNotices.has(key)) {
      this.tieredOAuthNotices.add(key);
      this.options.onTieredOAuthSkipped?.(tenant.id, reason);
    }
    return undefined;
  }

  /**
   * Completes an authorization from the callback URL. Returns a new session for launches, or the same session
   * with its `disclose` token stored for the disclose flow.
   */
  async complete(callbackUrl: URL, browserBinding: string): Promise<CompletedLaunch | { disclosed: SessionRecord }> {
    const state = callbackUrl.searchParams.get('state');
    if (!state) throw new DtrError('INVALID_INPUT', 'the callback carries no state');
    const stateHash = sha256(state);
    const attempt = await this.attempts.consume(stateHash, this.clock.now());
    if (!attempt)
      throw new DtrError('UNAUTHENTICATED', 'this sign-in link is unknown, expired or already used; launch again');
    try {
      return await this.completeAttempt(attempt, state, stateHash, callbackUrl, browserBinding);
    } catch (error) {
      // Which EHR the failed sign-in was for: its error page may be shown in that EHR's frame.
      if (!(error instanceof DtrError)) throw error;
      throw new DtrError(error.code, error.message, {
        cause: error.cause,
        details: { ...error.details, tenantId: attempt.tenant_id },
        expression: error.expression,
      });
    }
  }

  private async completeAttempt(
    attempt: NonNullable<Awaited<ReturnType<LaunchAttemptRepository['consume']>>>,
    state: string,
    stateHash: string,
    callbackUrl: URL,
    browserBinding: string,
  ): Promise<CompletedLaunch | { disclosed: SessionRecord }> {
    if (!sameHash(attempt.browser_binding_hash, sha256(browserBinding))) {
      throw new DtrError('FORBIDDEN', 'this sign-in was started in another browser');
    }
    const error = callbackUrl.searchParams.get('error');
    if (error) {
      const description = oauthDescription(callbackUrl.searchParams.get('error_description'));
      throw new DtrError(
        'FORBIDDEN',
        `the EHR did not authorize the app: ${error.slice(0, 100)}${description ? ` (${description})` : ''}`,
        {
          details: { oauthError: error.slice(0, 100), ...(description ? { oauthErrorDescription: description } : {}) },
        },
      );
    }
    const returnedIss = checkedIss(callbackUrl, attempt);
    const { verifier, nonce } = JSON.parse(this.secrets.open(attempt.code_verifier_enc, stateAad(stateHash))) as {
      verifier: string;
      nonce?: string;
    };
    const discovered = await this.discovery.get(attempt.fhir_base);
    // The code goes only to the token endpoint stored with the state (mix-up defense), whatever discovery says now.
    const smart: SmartConfiguration = { ...discovered, token_endpoint: attempt.token_endpoint };
    if (attempt.issuer !== null && discovered.issuer !== attempt.issuer) {
      throw new DtrError('FORBIDDEN', 'the EHR issuer changed during sign-in');
    }
    const credentials = await this.tenants.credentialsFor(attempt.tenant_id, attempt.purpose);
    let idToken: string | undefined;
    const config = await smartClientConfiguration(smart, credentials, {
      ...this.options,
      onIdToken: (token) => (idToken = token),
    });
    // The redirect_uri sent with the code must be the registered one, whatever host or proxy the request came through.
    const current = new URL(credentials.redirectUri);
    current.search = callbackUrl.search;
    // Without a known issuer, openid-client has nothing to compare `iss` with: checked above, then left out.
    if (returnedIss !== null && attempt.issuer === null) current.searchParams.delete('iss');

    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(config, current, { pkceCodeVerifier: verifier, expectedState: state });
    } catch (cause) {
      this.discovery.invalidate(attempt.fhir_base);
      throw translateOAuthError(cause);
    }
    if (tokens.token_type.toLowerCase() !== 'bearer') {
      throw new DtrError('UPSTREAM_ERROR', `unsupported token_type ${tokens.token_type}`);
    }
    // No id_token: the launch goes on, but nobody is identified (the pages say the author is unknown).
    const claims = idToken
      ? await this.idTokens.verify(idToken, { smart, clientId: credentials.clientId, nonce: nonce ?? '' })
      : undefined;
    const fhirUser = typeof claims?.['fhirUser'] === 'string' ? claims['fhirUser'] : null;
    const context = parseLaunchContext(tokens as unknown as Record<string, unknown>);
    const tokenSet: TokenSet = {
      accessToken: tokens.access_token,
      ...(tokens.refresh_token ? { refreshToken: tokens.refresh_token } : {}),
      ...(idToken ? { idToken } : {}),
      scope: tokens.scope ?? credentials.scopes.join(' '),
      expiresAt: new Date(this.clock.now().getTime() + (tokens.expiresIn() ?? 300) * 1000),
    };
    const meta = {
      purpose: credentials.purpose,
      tokenEndpoint: attempt.token_endpoint,
      clientId: credentials.clientId,
    };

    if (attempt.kind === 'disclose') {
      const session = attempt.session_id_hash ? await this.sessions.findByHash(attempt.session_id_hash) : undefined;
      if (!session) throw new DtrError('UNAUTHENTICATED', 'the session that asked for disclosure has ended');
      if (!context.patient || context.patient !== session.patient) {
        throw new DtrError('FORBIDDEN', 'the disclosure authorization is for a different patient than the session');
      }
      if (session.fhirUser && fhirUser !== session.fhirUser) {
        throw new DtrError('FORBIDDEN', 'the disclosure authorization is for a different user than the session');
      }
      await this.sessions.storeToken(session.idHash, session.fhirBase, { ...tokenSet, ...meta });
      return { disclosed: session };
    }

    if (!context.patient) throw new DtrError('FORBIDDEN', 'the EHR gave no patient in context; DTR needs one');
    const tenant = (await this.tenants.get(attempt.tenant_id))!;
    const { sessionId, record } = await this.sessions.create(
      {
        tenantId: attempt.tenant_id,
        fhirBase: attempt.fhir_base,
        patient: context.patient,
        encounter: context.encounter ?? null,
        fhirUser,
        context: { ...context, ...(tenant.singleClient ? { singleClient: true } : {}) } as LaunchContext,
        ttlMs: this.sessionTtlMs,
      },
      { ...tokenSet, ...meta },
    );
    return { sessionId, session: record };
  }
}

/**
 * Scopes for the request: `launch` for EHR launch, `launch/patient` for standalone, and always `openid fhirUser`
 * (the clinician must be known to author answers; servers that do not list `sso-openid-connect` often still issue
 * id_tokens, and one that does not leaves the author unknown).
 */
function scopesFor(kind: LaunchKind, credentials: RegistrationCredentials): string {
  const scopes = new Set(credentials.scopes.filter((s) => s !== 'launch' && s !== 'launch/patient'));
  if (kind === 'ehr') scopes.add('launch');
  // The disclose authorization asks for the patient again, so the answer can be checked against the session's.
  if (kind === 'standalone' || kind === 'disclose') scopes.add('launch/patient');
  scopes.add('openid');
  scopes.add('fhirUser');
  return [...scopes].join(' ');
}

/** The longest part of an EHR's own words (`error_description`) we repeat to the user and the log. */
const MAX_DESCRIPTION_CHARS = 300;

/** An EHR's `error_description`, as one line of printable text, capped; undefined when absent or not a string. */
function oauthDescription(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const line = value.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  if (!line) return undefined;
  return line.length > MAX_DESCRIPTION_CHARS ? `${line.slice(0, MAX_DESCRIPTION_CHARS)}…` : line;
}

/**
 * The EHR's token endpoint refused the code or our client: its error code and, when it gave one, its description
 * (what the administrator needs to fix a registration: "redirect_uri mismatch", "client authentication failed"…).
 * The page escapes it; the log keeps it with the request id.
 */
function tokenEndpointRefusal(oauthError: string, description: unknown, cause: unknown): DtrError {
  const text = oauthDescription(description);
  return new DtrError(
    'FORBIDDEN',
    `the token endpoint refused the request: ${oauthError.slice(0, 100)}${text ? ` (${text})` : ''}`,
    { cause, details: { oauthError: oauthError.slice(0, 100), ...(text ? { oauthErrorDescription: text } : {}) } },
  );
}

/**
 * RFC 9207 `iss` of the authorization response (mix-up defense): the issuer asked when the smart-configuration named
 * one; otherwise (no issuer identifier to compare with) at least the origin of the token endpoint stored with the state.
 */
function checkedIss(callbackUrl: URL, attempt: { issuer: string | null; token_endpoint: string }): string | null {
  const returned = callbackUrl.searchParams.get('iss');
  if (returned === null) return null;
  const ok = attempt.issuer !== null ? returned === attempt.issuer : sameOrigin(returned, attempt.token_endpoint);
  if (!ok)
    throw new DtrError(
      'FORBIDDEN',
      'the authorization response came from a different issuer than the one asked (mix-up)',
    );
  return returned;
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

/** openid-client's errors become DtrErrors once, here; the OAuth error code is kept, nothing else leaks. */
export function translateOAuthError(cause: unknown): DtrError {
  if (cause instanceof DtrError) return cause;
  const error = cause as {
    name?: string;
    code?: string;
    error?: string;
    message?: string;
    status?: number;
    cause?: Array<{ parameters?: { error?: string } }> | unknown;
  };
  // A 401 with WWW-Authenticate (openid-client's WWWAuthenticateChallengeError): our client authentication was refused.
  if (error?.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE' || error?.name === 'WWWAuthenticateChallengeError') {
    const parameters = Array.isArray(error.cause)
      ? (error.cause[0] as { parameters?: { error?: string; error_description?: string } } | undefined)?.parameters
      : undefined;
    return tokenEndpointRefusal(parameters?.error ?? 'invalid_client', parameters?.error_description, cause);
  }
  if (error?.name === 'TimeoutError' || error?.name === 'AbortError') {
    return new DtrError('UPSTREAM_TIMEOUT', 'the token endpoint did not answer in time', { cause });
  }
  // openid-client's own checks of what came back (id_token signature, iss, aud, nonce, exp; response iss): refused.
  if (
    typeof error?.code === 'string' &&
    error.code.startsWith('OAUTH_') &&
    error.code !== 'OAUTH_RESPONSE_BODY_ERROR'
  ) {
    return new DtrError(
      'FORBIDDEN',
      `the authorization server's response failed validation: ${error.message ?? error.code}`,
      {
        cause,
        details: { check: error.code },
      },
    );
  }
  if (typeof error?.error === 'string') {
    return tokenEndpointRefusal(error.error, (cause as { error_description?: unknown }).error_description, cause);
  }
  // Anything else (an unexpected status, a body that is not a token response, a dropped connection): our words and
  // the HTTP status only, never what came back (a parser's message can quote the body).
  const status = typeof error?.status === 'number' ? error.status : undefined;
  const code = systemCodeOf(cause);
  const why = status ? ` (HTTP ${status})` : code ? ` (${code})` : '';
  return new DtrError('UPSTREAM_ERROR', `the token request failed${why}`, {
    cause,
    details: { ...(status ? { status } : {}), reason: code ?? 'error' },
  });
}

/**
 * The runtime's code for a failed connection (`ECONNREFUSED`, `ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`…), from the
 * error or its causes: ours to repeat (it names what failed, not what a peer said), unlike any message. The TLS
 * library's reason is also read from its message when it carries no code, as a code-shaped token only.
 */
function systemCodeOf(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && depth < 5; depth++) {
    const { code, message, cause } = e as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof code === 'string' && /^[A-Z][A-Z0-9_]{2,80}$/.test(code) && code !== 'OAUTH_RESPONSE_IS_NOT_CONFORM')
      return code;
    const tls = typeof message === 'string' ? /SSL routines:[a-z0-9_]+:([a-z0-9 ]{3,80}):/.exec(message) : null;
    if (tls) return `TLS: ${tls[1]}`;
    e = cause;
  }
  return undefined;
}
