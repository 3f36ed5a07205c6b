import { randomBytes } from 'node:crypto';
import type { IssuedCertificate } from '@dtr/udap';
import type { Request, Response } from 'express';
import { SignJWT, decodeJwt, importPKCS8 } from 'jose';
import type { InteractionDetails } from '../ehr/auth/index.js';
import type { PeerServer } from '../shared/peer-server.js';
import type { SandboxUdapCommunity } from './community.js';
import { UDAP_CLIENT_PREFIX, UdapServer } from './udap-server.js';
import { UdapJwtRefused, audienceIs, checkLifetime, verifyUdapJwt } from './udap-jwt.js';

/** Where the sandbox plays a UDAP identity provider, on the EHR's origin. */
const IDP_PATH = '/idp';
/** The EHR's redirect URI at identity providers. */
const TIERED_CALLBACK_PATH = '/udap/tiered-callback';

/** A login the EHR delegated to an identity provider (UDAP Tiered OAuth), as a test reads it. */
export interface TieredLogin {
  /** The app whose authorization request named the IdP. */
  clientId: string;
  idp: string;
  /** The user at the IdP (`sub` of its ID token). */
  idpSubject: string;
  /** The EHR user the IdP's user was mapped to. */
  accountId: string;
  at: string;
}

const signer = async (cert: IssuedCertificate) => ({
  key: await importPKCS8(cert.privateKeyPem, 'RS256'),
  x5c: cert.x5c,
});

/**
 * The sandbox's UDAP identity provider at `{ehrOrigin}/idp` (dev/test only): its own discovery and signed metadata
 * from the community CA, UDAP dynamic registration, an authorization endpoint that authenticates one sandbox user
 * without asking (as the sandbox's own login does), and a token endpoint for UDAP-authenticated clients that returns
 * an ID token signed with the IdP's certificate (`x5c`).
 * @see https://www.udap.org/udap-user-auth-stu1.html
 */
export function mountSandboxIdp(peer: PeerServer, community: SandboxUdapCommunity): UdapServer {
  const base = `${peer.origin}${IDP_PATH}`;
  const idp = new UdapServer({
    peer,
    community,
    baseUrl: base,
    authorizationEndpoint: `${base}/authorize`,
    tokenEndpoint: `${base}/token`,
    registrationEndpoint: `${base}/register`,
    profiles: ['udap_dcr', 'udap_authn'],
    grantTypes: ['authorization_code'],
    scopesSupported: ['openid', 'udap', 'profile', 'email'],
    extensionsSupported: [],
  });
  idp.mountDiscovery(`${IDP_PATH}/.well-known/udap`);
  peer.app.post(`${IDP_PATH}/register`, ...idp.registrationRoute());
  const codes = new Map<string, { clientId: string; redirectUri: string; nonce?: string; expires: number }>();

  peer.app.get(`${IDP_PATH}/authorize`, (req: Request, res: Response) => {
    const q = req.query as Record<string, unknown>;
    const client = typeof q['client_id'] === 'string' ? idp.registrar.client(q['client_id']) : undefined;
    const redirectUri = typeof q['redirect_uri'] === 'string' ? q['redirect_uri'] : '';
    if (!client || !client.redirectUris.includes(redirectUri)) {
      res.status(400).type('text/plain').send('unknown client_id or redirect_uri');
      return;
    }
    const back = new URL(redirectUri);
    if (typeof q['state'] === 'string') back.searchParams.set('state', q['state']);
    const scopes = String(q['scope'] ?? '').split(' ');
    if (q['response_type'] !== 'code' || !scopes.includes('openid') || !scopes.includes('udap')) {
      back.searchParams.set('error', 'invalid_request');
      back.searchParams.set('error_description', 'response_type code and scope openid udap are required');
      res.redirect(303, back.toString());
      return;
    }
    const code = randomBytes(24).toString('base64url');
    codes.set(code, {
      clientId: client.clientId,
      redirectUri,
      ...(typeof q['nonce'] === 'string' ? { nonce: q['nonce'] } : {}),
      expires: Date.now() + 60_000,
    });
    back.searchParams.set('code', code);
    res.redirect(303, back.toString());
  });

  peer.app.post(`${IDP_PATH}/token`, ...idp.tokenGuard(), (req: Request, res: Response) => {
    void (async () => {
      const params = new URLSearchParams(Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '');
      const assertion = params.get('client_assertion') ?? '';
      const clientId = assertion ? String(decodeJwt(assertion).iss) : '';
      // The guard checked the assertion of every `udap-` client; anything else is not a client of this IdP.
      if (!clientId.startsWith(UDAP_CLIENT_PREFIX) || !idp.registrar.client(clientId)) {
        res.status(401).json({ error: 'invalid_client', error_description: 'a UDAP-registered client is required' });
        return;
      }
      const code = codes.get(params.get('code') ?? '');
      codes.delete(params.get('code') ?? '');
      if (
        params.get('grant_type') !== 'authorization_code' ||
        !code ||
        code.expires < Date.now() ||
        code.clientId !== clientId ||
        code.redirectUri !== params.get('redirect_uri')
      ) {
        res.status(400).json({ error: 'invalid_grant', error_description: 'the code is unknown, spent or not yours' });
        return;
      }
      const { key, x5c } = await signer(community.serverCertificate(base));
      const now = Math.floor(Date.now() / 1000);
      const idToken = await new SignJWT({ ...(code.nonce ? { nonce: code.nonce } : {}), name: 'Sandbox IdP User' })
        .setProtectedHeader({ alg: 'RS256', x5c })
        .setIssuer(base)
        .setSubject('idp-user-1')
        .setAudience(clientId)
        .setIssuedAt(now)
        .setExpirationTime(now + 300)
        .setJti(randomBytes(16).toString('hex'))
        .sign(key);
      res.set('cache-control', 'no-store').json({
        access_token: randomBytes(24).toString('base64url'),
        token_type: 'Bearer',
        expires_in: 300,
        scope: 'openid udap',
        id_token: idToken,
      });
    })().catch(() => res.status(500).json({ error: 'server_error' }));
  });
  return idp;
}

/** How long the EHR waits for the IdP's answer to one login. */
const PENDING_MS = 10 * 60_000;

interface Pending {
  at: number;
  uid: string;
  appClientId: string;
  idp: string;
  nonce: string;
  idpClientId: string;
  tokenEndpoint: string;
}

interface IdpEndpoints {
  authorizationEndpoint: string;
  tokenEndpoint: string;
  registrationEndpoint: string;
}

export interface TieredOAuthOptions {
  peer: PeerServer;
  community: SandboxUdapCommunity;
  /** The EHR's FHIR base: the SAN URI of the certificate it signs with at identity providers. */
  ehrBase: string;
  /** Identity providers the EHR trusts (base URLs); any other `idp` is refused with `invalid_idp`. */
  trustedIdps: string[];
  /** The EHR user an identity provider's user is mapped to (the sandbox maps everyone to one user). */
  accountFor: () => string;
  /** Ends the interaction `uid` with this login or this error (the EHR's authorization server). */
  finishLogin: (req: Request, res: Response, accountId: string) => Promise<void>;
  finishWithError: (req: Request, res: Response, error: string, description: string) => Promise<void>;
}

/**
 * The EHR's side of UDAP Tiered OAuth: an authorization request with `idp` and scope `udap` sends the user to that
 * identity provider when the EHR trusts it (its signed metadata checks out against the community anchor), after
 * registering there once; the IdP's ID token is checked and the login recorded; an untrusted or failing IdP ends
 * the request with `invalid_idp` at the app's redirect URI.
 * @see https://hl7.org/fhir/us/udap-security/user.html
 */
export class TieredOAuth {
  /** By `state`; an abandoned login is forgotten after {@link PENDING_MS}. */
  private readonly pending = new Map<string, Pending>();
  private readonly outcomes = new Map<
    string,
    { ok: true; accountId: string; idpSubject: string; pending: Pending } | { ok: false; description: string }
  >();
  private readonly registrations = new Map<string, string>();
  private readonly logins: TieredLogin[] = [];

  constructor(private readonly options: TieredOAuthOptions) {
    const { peer } = options;
    // A user already signed in at the EHR still goes to the IdP the app named: the request asks for a login.
    peer.app.get('/auth/auth', (req, _res, next) => {
      const url = new URL(req.url, 'http://sandbox');
      const scopes = (url.searchParams.get('scope') ?? '').split(' ');
      const prompts = new Set((url.searchParams.get('prompt') ?? '').split(' ').filter(Boolean));
      if (url.searchParams.has('idp') && scopes.includes('udap') && !prompts.has('none') && !prompts.has('login')) {
        url.searchParams.set('prompt', [...prompts, 'login'].join(' '));
        req.url = `${url.pathname}${url.search}`;
      }
      next();
    });
    peer.app.get(TIERED_CALLBACK_PATH, (req, res) => void this.callback(req, res));
    peer.app.get('/auth/interaction/:uid/idp-return', (req, res) => void this.finish(req, res));
    peer.app.get('/_sandbox/udap/tiered-logins', (_req, res) => {
      res.json(this.logins);
    });
  }

  tieredLogins(): TieredLogin[] {
    return [...this.logins];
  }

  /** The login step of an authorization request naming `idp` (always answers the browser). */
  async login(req: Request, res: Response, details: InteractionDetails): Promise<boolean> {
    const idp = String(details.params['idp']);
    const refuse = (description: string) => this.options.finishWithError(req, res, 'invalid_idp', description);
    if (!this.options.trustedIdps.includes(idp)) {
      await refuse(`the identity provider ${idp} is not one this EHR trusts`);
      return true;
    }
    let endpoints: IdpEndpoints;
    let idpClientId: string;
    try {
      endpoints = await this.discover(idp);
      idpClientId = await this.registerAt(idp, endpoints.registrationEndpoint);
    } catch (error) {
      await refuse(`the identity provider ${idp} cannot be used: ${error instanceof Error ? error.message : 'failed'}`);
      return true;
    }
    const state = randomBytes(24).toString('base64url');
    const nonce = randomBytes(24).toString('base64url');
    const now = Date.now();
    for (const [key, old] of this.pending) if (old.at < now - PENDING_MS) this.pending.delete(key);
    this.pending.set(state, {
      at: now,
      uid: details.uid,
      appClientId: String(details.params['client_id']),
      idp,
      nonce,
      idpClientId,
      tokenEndpoint: endpoints.tokenEndpoint,
    });
    const url = new URL(endpoints.authorizationEndpoint);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: idpClientId,
      redirect_uri: this.redirectUri,
      scope: 'openid udap',
      state,
      nonce,
    }).toString();
    res.redirect(303, url.toString());
    return true;
  }

  private get redirectUri(): string {
    return `${this.options.peer.origin}${TIERED_CALLBACK_PATH}`;
  }

  /** The IdP's signed metadata, checked: RS256, chain to the anchor, `iss` = `sub` = the IdP's base and a SAN URI. */
  private async discover(idp: string): Promise<IdpEndpoints> {
    const response = await fetch(`${idp}/.well-known/udap`, { signal: AbortSignal.timeout(5000) });
    if (response.status !== 200) throw new Error(`its UDAP metadata answered ${response.status}`);
    const metadata = (await response.json()) as Record<string, unknown>;
    const scopes = metadata['scopes_supported'];
    if (!Array.isArray(scopes) || !scopes.includes('openid') || !scopes.includes('udap'))
      throw new Error('its metadata does not list the openid and udap scopes');
    if (typeof metadata['signed_metadata'] !== 'string') throw new Error('its metadata is not signed');
    let claims: Record<string, unknown>;
    try {
      const verified = await verifyUdapJwt(metadata['signed_metadata'], [this.options.community.anchorPem], new Date());
      claims = verified.claims;
      if (verified.alg !== 'RS256') throw new UdapJwtRefused('unsupported-alg', 'signed metadata must be RS256');
      if (claims['iss'] !== idp || claims['sub'] !== idp)
        throw new UdapJwtRefused('bad-claims', 'signed metadata iss and sub must be its base URL');
      if (!verified.sanUris.includes(idp))
        throw new UdapJwtRefused('san-mismatch', 'its certificate does not name its base URL');
      if (typeof claims['exp'] !== 'number' || claims['exp'] * 1000 < Date.now())
        throw new UdapJwtRefused('bad-claims', 'its signed metadata has expired');
    } catch (error) {
      if (error instanceof UdapJwtRefused) throw new Error(`its signed metadata is refused: ${error.message}`);
      throw error;
    }
    const endpoint = (name: string) => {
      const value = claims[name];
      if (typeof value !== 'string' || !URL.canParse(value)) throw new Error(`its signed metadata has no ${name}`);
      return value;
    };
    return {
      authorizationEndpoint: endpoint('authorization_endpoint'),
      tokenEndpoint: endpoint('token_endpoint'),
      registrationEndpoint: endpoint('registration_endpoint'),
    };
  }

  /** The EHR's client id at the IdP, registering there (UDAP dynamic registration) the first time. */
  private async registerAt(idp: string, registrationEndpoint: string): Promise<string> {
    const known = this.registrations.get(idp);
    if (known) return known;
    const { key, x5c } = await signer(this.options.community.serverCertificate(this.options.ehrBase));
    const now = Math.floor(Date.now() / 1000);
    const statement = await new SignJWT({
      client_name: 'Sandbox EHR',
      contacts: ['mailto:sandbox-ehr@example.org'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [this.redirectUri],
      logo_uri: `${this.options.peer.origin}/udap/logo.gif`,
      token_endpoint_auth_method: 'private_key_jwt',
      scope: 'openid udap',
    })
      .setProtectedHeader({ alg: 'RS256', x5c })
      .setIssuer(this.options.ehrBase)
      .setSubject(this.options.ehrBase)
      .setAudience(registrationEndpoint)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .setJti(randomBytes(16).toString('hex'))
      .sign(key);
    const response = await fetch(registrationEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ software_statement: statement, udap: '1' }),
      signal: AbortSignal.timeout(5000),
    });
    const body = (await response.json()) as Record<string, unknown>;
    if (response.status !== 201 && response.status !== 200)
      throw new Error(`it refused our registration (${String(body['error_description'] ?? response.status)})`);
    const clientId = String(body['client_id']);
    this.registrations.set(idp, clientId);
    return clientId;
  }

  /** The IdP's answer: the state checked, the code exchanged, the ID token checked; then back to the interaction. */
  private async callback(req: Request, res: Response): Promise<void> {
    const state = typeof req.query['state'] === 'string' ? req.query['state'] : '';
    const pending = this.pending.get(state);
    this.pending.delete(state);
    if (!pending) {
      res.status(400).type('text/plain').send('unknown or spent state');
      return;
    }
    try {
      if (typeof req.query['error'] === 'string')
        throw new Error(`the identity provider answered ${req.query['error']}`);
      const code = typeof req.query['code'] === 'string' ? req.query['code'] : '';
      const idpSubject = await this.exchange(pending, code);
      this.outcomes.set(pending.uid, { ok: true, accountId: this.options.accountFor(), idpSubject, pending });
    } catch (error) {
      this.outcomes.set(pending.uid, {
        ok: false,
        description: `the identity provider ${pending.idp} did not authenticate the user: ${error instanceof Error ? error.message : 'failed'}`,
      });
    }
    res.redirect(303, `/auth/interaction/${encodeURIComponent(pending.uid)}/idp-return`);
  }

  /** The IdP's token endpoint with a UDAP authentication token; the ID token's `sub` once it checks out. */
  private async exchange(pending: Pending, code: string): Promise<string> {
    const { key, x5c } = await signer(this.options.community.serverCertificate(this.options.ehrBase));
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', x5c })
      .setIssuer(pending.idpClientId)
      .setSubject(pending.idpClientId)
      .setAudience(pending.tokenEndpoint)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .setJti(randomBytes(16).toString('hex'))
      .sign(key);
    const response = await fetch(pending.tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        redirect_uri: this.redirectUri,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
        udap: '1',
      }),
      signal: AbortSignal.timeout(5000),
    });
    const body = (await response.json()) as Record<string, unknown>;
    if (response.status !== 200 || typeof body['id_token'] !== 'string')
      throw new Error(`its token endpoint answered ${response.status} ${String(body['error'] ?? '')}`.trim());
    const verified = await verifyUdapJwt(body['id_token'], [this.options.community.anchorPem], new Date());
    const claims = verified.claims;
    checkLifetime(claims, new Date());
    if (claims['iss'] !== pending.idp || !verified.sanUris.includes(pending.idp))
      throw new Error('its ID token was not issued by it');
    if (!audienceIs(claims, pending.idpClientId)) throw new Error('its ID token is for another client');
    if (claims['nonce'] !== pending.nonce) throw new Error('its ID token carries another nonce');
    if (typeof claims['sub'] !== 'string' || claims['sub'] === '') throw new Error('its ID token has no sub');
    return claims['sub'];
  }

  private async finish(req: Request, res: Response): Promise<void> {
    const uid = String(req.params['uid']);
    const outcome = this.outcomes.get(uid);
    this.outcomes.delete(uid);
    try {
      if (!outcome) {
        res.status(400).type('text/plain').send('no identity provider answer for this interaction');
        return;
      }
      if (!outcome.ok) {
        await this.options.finishWithError(req, res, 'invalid_idp', outcome.description);
        return;
      }
      this.logins.push({
        clientId: outcome.pending.appClientId,
        idp: outcome.pending.idp,
        idpSubject: outcome.idpSubject,
        accountId: outcome.accountId,
        at: new Date().toISOString(),
      });
      await this.options.finishLogin(req, res, outcome.accountId);
    } catch (error) {
      res
        .status(400)
        .type('text/plain')
        .send(error instanceof Error ? error.message : 'interaction failed');
    }
  }
}
