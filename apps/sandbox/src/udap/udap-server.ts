import { randomBytes } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { type JWK, SignJWT, decodeJwt, decodeProtectedHeader, exportJWK, importPKCS8 } from 'jose';
import type { PeerServer } from '../shared/peer-server.js';
import { noteUdapAuthentication } from '../shared/request-log.js';
import { SANDBOX_COMMUNITY_URI, type SandboxUdapCommunity, type UdapMetadataFault } from './community.js';
import { type UdapClient, UdapRegistrar } from './registration.js';
import { JtiLedger, UDAP_SIGNING_ALGS, UdapJwtRefused, audienceIs, checkLifetime, verifyUdapJwt } from './udap-jwt.js';

/**
 * Client ids the sandbox gives UDAP-registered clients start with this: every token request naming such a client gets
 * the UDAP checks, at whichever sandbox server it arrives (oidc-provider's in-memory store is shared by the process).
 */
export const UDAP_CLIENT_PREFIX = 'udap-';

/** The slice of an oidc-provider a UDAP server in front of it needs: its client store and its scopes. */
export interface ProviderHandle {
  upsertClient(metadata: Record<string, unknown>): Promise<void>;
  removeClient(clientId: string): Promise<void>;
  scopes: readonly string[];
}

export interface UdapServerOptions {
  peer: PeerServer;
  community: SandboxUdapCommunity;
  /** The base URL this server answers for: `iss`/`sub` of its signed metadata and the SAN URI of its certificate. */
  baseUrl: string;
  authorizationEndpoint?: string;
  tokenEndpoint: string;
  registrationEndpoint: string;
  profiles: string[];
  grantTypes: Array<'authorization_code' | 'client_credentials'>;
  /** Scopes listed in the metadata (the authorization server may know more). */
  scopesSupported: string[];
  /** `hl7-b2b` where client_credentials is offered. */
  extensionsSupported: string[];
  /** Extensions every token request must carry (default none). */
  extensionsRequired?: string[];
}

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/**
 * One sandbox server's UDAP side: `GET {base}/.well-known/udap` with signed metadata (and the `udapMetadata` and `udapProfilesOmitted` faults),
 * the dynamic registration endpoint, and the checks of UDAP authentication tokens in front of the token endpoint.
 * @see https://hl7.org/fhir/us/udap-security/discovery.html
 */
export class UdapServer {
  readonly registrar: UdapRegistrar;
  private readonly jtis = new JtiLedger();
  private provider: ProviderHandle | undefined;

  constructor(private readonly options: UdapServerOptions) {
    this.registrar = new UdapRegistrar({
      endpoint: options.registrationEndpoint,
      anchorsPem: () => [options.community.anchorPem],
      grantTypes: options.grantTypes,
      scopesSupported: () => this.provider?.scopes ?? options.scopesSupported,
      onChange: (clientId, client) => this.sync(clientId, client),
    });
  }

  get baseUrl(): string {
    return this.options.baseUrl;
  }

  get tokenEndpoint(): string {
    return this.options.tokenEndpoint;
  }

  /** The scopes a client registered here holds, or undefined when it is not one of this server's UDAP clients. */
  registeredScopes(clientId: string): string[] | undefined {
    return this.registrar.client(clientId)?.scope.split(' ').filter(Boolean);
  }

  /** The unsigned metadata document (without `signed_metadata`). */
  metadata(): Record<string, unknown> {
    const o = this.options;
    return {
      udap_versions_supported: ['1'],
      udap_profiles_supported: o.profiles,
      udap_authorization_extensions_supported: o.extensionsSupported,
      // Present whenever extensions are supported (IG section 2.2); what every token request must carry.
      ...(o.extensionsSupported.length > 0
        ? { udap_authorization_extensions_required: o.extensionsRequired ?? [] }
        : {}),
      udap_certifications_supported: [],
      grant_types_supported: o.grantTypes.includes('authorization_code')
        ? [...o.grantTypes, 'refresh_token']
        : [...o.grantTypes],
      scopes_supported: o.scopesSupported,
      ...(o.authorizationEndpoint ? { authorization_endpoint: o.authorizationEndpoint } : {}),
      token_endpoint: o.tokenEndpoint,
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: [...UDAP_SIGNING_ALGS],
      registration_endpoint: o.registrationEndpoint,
      registration_endpoint_jwt_signing_alg_values_supported: [...UDAP_SIGNING_ALGS],
    };
  }

  /**
   * `signed_metadata`: RS256, `x5c` of the server's certificate, `iss` = `sub` = the base URL, the endpoints; or the
   * defect `fault` names.
   * @see https://hl7.org/fhir/us/udap-security/discovery.html#signed-metadata-elements
   */
  async signedMetadata(fault?: UdapMetadataFault): Promise<string> {
    const o = this.options;
    const cert =
      fault && fault !== 'bad-signature'
        ? o.community.faultyCertificate(o.baseUrl, fault)
        : o.community.serverCertificate(o.baseUrl);
    const key = await importPKCS8(cert.privateKeyPem, 'RS256');
    const now = Math.floor(Date.now() / 1000);
    const jwt = await new SignJWT({
      ...(o.authorizationEndpoint ? { authorization_endpoint: o.authorizationEndpoint } : {}),
      token_endpoint: o.tokenEndpoint,
      registration_endpoint: o.registrationEndpoint,
    })
      .setProtectedHeader({ alg: 'RS256', x5c: cert.x5c })
      .setIssuer(o.baseUrl)
      .setSubject(o.baseUrl)
      .setIssuedAt(now)
      .setExpirationTime(now + 24 * 3600)
      .setJti(randomBytes(16).toString('hex'))
      .sign(key);
    if (fault !== 'bad-signature') return jwt;
    // One signature byte changed: the JWT still parses, its signature no longer verifies.
    const [head, body, signature] = jwt.split('.') as [string, string, string];
    const bytes = Buffer.from(signature, 'base64url');
    bytes[0] = bytes[0]! ^ 0xff;
    return `${head}.${body}.${bytes.toString('base64url')}`;
  }

  /**
   * `GET {path}`: the metadata; 204 for a `community` other than the sandbox's (STU 2 section 2.4 allows it, and it
   * tells a client it named the wrong community).
   */
  mountDiscovery(path: string): void {
    const { peer } = this.options;
    peer.app.get(path, (req: Request, res: Response, next: NextFunction) => {
      const community = req.query['community'];
      if (community !== undefined && community !== SANDBOX_COMMUNITY_URI) {
        res.status(204).end();
        return;
      }
      const faults = peer.faults.current;
      const applies = !faults.paths || faults.paths.some((p) => req.path.startsWith(p));
      const fault = applies ? faults.udapMetadata : undefined;
      const omitted = new Set(applies ? (faults.udapProfilesOmitted ?? []) : []);
      const metadata = this.metadata();
      const profiles = (metadata['udap_profiles_supported'] as string[]).filter((p) => !omitted.has(p));
      this.signedMetadata(fault)
        .then((signed) => res.json({ ...metadata, udap_profiles_supported: profiles, signed_metadata: signed }))
        .catch(next);
    });
  }

  /** `POST {path}`: UDAP dynamic registration (JSON body). */
  registrationRoute(): Handlers {
    return [
      express.json({ limit: '128kb', type: () => true }),
      (req: Request, res: Response, next: NextFunction) => {
        // In the peer's request log with the client it registered, modified or cancelled (tests read what was asked).
        const entry = this.options.peer.log.start({ method: req.method, path: req.path, query: {} });
        const statement = statementClaims(req.body);
        if (statement) entry.softwareStatement = statement;
        this.registrar
          .register(req.body)
          .then((answer) => {
            entry.status = answer.status;
            if (typeof answer.body['client_id'] === 'string') entry.clientId = answer.body['client_id'];
            res.status(answer.status).set('cache-control', 'no-store').json(answer.body);
          })
          .catch(next);
      },
      unreadableBody('invalid_software_statement', 'the body must be a JSON object of at most 128 KB'),
    ];
  }

  /**
   * `POST {authPath}/register` and the checks in front of `POST {authPath}/token`: mounted before the oidc-provider
   * that serves `authPath`, which is {@link attach}ed once it exists.
   */
  mountAuthRoutes(app: Express, authPath: string): void {
    app.post(`${authPath}/register`, ...this.registrationRoute());
    app.post(`${authPath}/token`, ...this.tokenGuard());
  }

  /** The authorization server whose client store registrations go to (they are copied there from now on). */
  async attach(provider: ProviderHandle): Promise<void> {
    this.provider = provider;
    for (const client of this.registrar.clients()) await this.sync(client.clientId, client);
  }

  /**
   * In front of the token endpoint: a request from a UDAP-registered client (or saying `udap=1`) must carry a UDAP
   * authentication token that passes every check, else `401 invalid_client`; other clients pass through untouched.
   * The body is read here as bytes and left for the provider, which reads it again.
   * @see https://hl7.org/fhir/us/udap-security/b2b.html#constructing-authentication-token
   */
  tokenGuard(): Handlers {
    return [
      express.raw({ type: 'application/x-www-form-urlencoded', limit: '56kb' }),
      (req: Request, res: Response, next: NextFunction) => {
        if (!Buffer.isBuffer(req.body)) return next();
        const params = new URLSearchParams(req.body.toString('utf8'));
        const assertion = params.get('client_assertion') ?? '';
        let claimedIss: unknown;
        try {
          claimedIss = assertion ? decodeJwt(assertion).iss : undefined;
        } catch {
          claimedIss = undefined;
        }
        const named = [claimedIss, params.get('client_id')].some(
          (id) => typeof id === 'string' && id.startsWith(UDAP_CLIENT_PREFIX),
        );
        if (!named && !params.has('udap')) return next();
        this.checkAssertion(params)
          .then((claims) => {
            // For the entry the authorization server makes of this request (tests read what authenticated it).
            noteUdapAuthentication(res.locals, {
              header: decodeProtectedHeader(assertion) as Record<string, unknown>,
              claims,
              udap: params.get('udap'),
            });
            next();
          })
          .catch((error: unknown) => {
            if (!(error instanceof UdapJwtRefused)) return next(error);
            // Recorded as the provider records the requests it answers (it never sees this one).
            this.options.peer.log.start({
              method: req.method,
              path: req.path,
              query: {},
              ...(typeof claimedIss === 'string' ? { clientId: claimedIss } : {}),
              status: 401,
              grant: { type: params.get('grant_type') ?? 'none' },
            });
            res
              .status(401)
              .set('cache-control', 'no-store')
              .json({ error: 'invalid_client', error_description: error.message });
          });
      },
      unreadableBody('invalid_request', 'the body must be a form of at most 56 KB'),
    ];
  }

  /** The claims of a UDAP authentication token that passes every check; else UdapJwtRefused. */
  private async checkAssertion(params: URLSearchParams): Promise<Record<string, unknown>> {
    const now = new Date();
    if (params.get('udap') !== '1') throw new UdapJwtRefused('bad-claims', 'udap=1 is required of UDAP clients');
    if (params.get('client_assertion_type') !== ASSERTION_TYPE)
      throw new UdapJwtRefused('bad-claims', `client_assertion_type must be ${ASSERTION_TYPE}`);
    const verified = await verifyUdapJwt(params.get('client_assertion') ?? '', [this.options.community.anchorPem], now);
    const { claims } = verified;
    const { iss, jti, exp } = checkLifetime(claims, now);
    if (claims['sub'] !== iss) throw new UdapJwtRefused('bad-claims', 'sub must equal iss (the client_id)');
    const clientId = params.get('client_id');
    if (clientId !== null && clientId !== iss) throw new UdapJwtRefused('bad-claims', 'client_id must equal iss');
    const client = this.registrar.client(iss);
    if (!client) throw new UdapJwtRefused('bad-claims', `client ${iss} is not registered here (or was cancelled)`);
    if (!verified.sanUris.includes(client.sanUri))
      throw new UdapJwtRefused(
        'san-mismatch',
        `the certificate's SAN URIs do not include ${client.sanUri}, which the client registered with`,
      );
    if (!audienceIs(claims, this.options.tokenEndpoint))
      throw new UdapJwtRefused('bad-claims', `aud must be the token endpoint, ${this.options.tokenEndpoint}`);
    if (params.get('grant_type') === 'client_credentials') checkB2b(claims['extensions']);
    if (!this.jtis.use(iss, jti, exp, now)) throw new UdapJwtRefused('replayed-jti', 'jti already used');
    // A newer certificate of the same SAN is the client's key from now on (the provider checks the signature again).
    const jwk: JWK = { ...(await exportJWK(verified.leaf.publicKey)), alg: verified.alg, use: 'sig' };
    if (jwk.n !== client.jwk.n || jwk.x !== client.jwk.x || jwk.alg !== client.jwk.alg) {
      this.registrar.rekey(client.clientId, jwk);
      await this.sync(client.clientId, { ...client, jwk });
    }
    return claims;
  }

  private async sync(clientId: string, client: UdapClient | undefined): Promise<void> {
    if (!this.provider) return;
    if (!client) return this.provider.removeClient(clientId);
    const code = client.grantTypes.includes('authorization_code');
    await this.provider.upsertClient({
      client_id: client.clientId,
      client_name: client.clientName,
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: [client.jwk] },
      grant_types: client.grantTypes,
      response_types: code ? ['code'] : [],
      redirect_uris: client.redirectUris,
      scope: client.scope,
    });
  }
}

type Handlers = Array<express.RequestHandler | express.ErrorRequestHandler>;

/** The claims of the software statement a registration body carries, unverified (for the request log only). */
function statementClaims(body: unknown): Record<string, unknown> | undefined {
  const statement =
    typeof body === 'object' && body !== null ? (body as Record<string, unknown>)['software_statement'] : undefined;
  if (typeof statement !== 'string') return undefined;
  try {
    return decodeJwt(statement);
  } catch {
    return undefined;
  }
}

/** A body the parser could not read (not JSON, too large): a 400 in the endpoint's own error format. */
function unreadableBody(error: string, description: string): express.ErrorRequestHandler {
  return (err: unknown, _req: Request, res: Response, next: NextFunction) => {
    const status = (err as { status?: unknown }).status;
    if (status !== 400 && status !== 413) return next(err);
    res.status(400).json({ error, error_description: description });
  };
}

/**
 * The `hl7-b2b` authorization extension a client_credentials authentication token must carry: `version` "1",
 * `organization_id` (a URI) and `purpose_of_use` (one or more codes).
 * @see https://hl7.org/fhir/us/udap-security/b2b.html#b2b-authorization-extension-object
 */
function checkB2b(extensions: unknown): void {
  const b2b =
    typeof extensions === 'object' && extensions !== null
      ? (extensions as Record<string, unknown>)['hl7-b2b']
      : undefined;
  if (typeof b2b !== 'object' || b2b === null || Array.isArray(b2b))
    throw new UdapJwtRefused('bad-claims', 'client_credentials requires the hl7-b2b extension in extensions');
  const { version, organization_id: org, purpose_of_use: purposes } = b2b as Record<string, unknown>;
  if (version !== '1') throw new UdapJwtRefused('bad-claims', 'hl7-b2b version must be "1"');
  if (typeof org !== 'string' || !URL.canParse(org))
    throw new UdapJwtRefused('bad-claims', 'hl7-b2b organization_id must be a URI');
  if (!Array.isArray(purposes) || purposes.length === 0 || !purposes.every((p) => typeof p === 'string' && p))
    throw new UdapJwtRefused('bad-claims', 'hl7-b2b purpose_of_use must list one or more codes');
}
