import { randomBytes } from 'node:crypto';
import { type JWK, exportJWK } from 'jose';
import { JtiLedger, UdapJwtRefused, audienceIs, checkLifetime, verifyUdapJwt } from './udap-jwt.js';

/** A client registered through UDAP dynamic registration. */
export interface UdapClient {
  clientId: string;
  /** The SAN URI (`iss` of its software statement) that identifies the client in the community. */
  sanUri: string;
  clientName: string;
  grantTypes: string[];
  redirectUris: string[];
  scope: string;
  /** The public key of the certificate it registered with (what its authentication tokens are checked against). */
  jwk: JWK;
}

type RegistrationError = 'invalid_software_statement' | 'unapproved_software_statement' | 'invalid_client_metadata';

export interface RegistrationAnswer {
  status: 200 | 201 | 400;
  body: Record<string, unknown>;
}

export interface RegistrarOptions {
  /** This registration endpoint's URL (the `aud` software statements must name). */
  endpoint: string;
  anchorsPem: () => string[];
  /** The grant types this server registers clients for. */
  grantTypes: ReadonlyArray<'authorization_code' | 'client_credentials'>;
  /** Scopes the server knows; a registration keeps those of its `scope` that are here. */
  scopesSupported: () => readonly string[];
  /** Called after a client is registered, modified (`client` set) or cancelled (`client` undefined). */
  onChange?: (clientId: string, client: UdapClient | undefined) => Promise<void>;
  now?: () => Date;
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** https, or http on loopback only (the sandbox and our server run on loopback). */
const httpsOrLoopback = (value: string): boolean => {
  if (!URL.canParse(value)) return false;
  const url = new URL(value);
  return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
};

const refuse = (error: RegistrationError, description: string): RegistrationAnswer => ({
  status: 400,
  body: { error, error_description: description },
});

/**
 * A strict UDAP dynamic registration endpoint's rules: the software statement is checked as UDAP Dynamic Client
 * Registration section 4 and the IG say (signature by the x5c leaf, chain to the community, `iss` = `sub` = a SAN URI
 * of the leaf, `aud` = this endpoint, lifetime at most 5 minutes, `jti` single use, the metadata), one client per SAN
 * URI: registering again with the same `iss` modifies it (same `client_id`, 200), an empty `grant_types` cancels it.
 * @see https://hl7.org/fhir/us/udap-security/registration.html
 * @see https://www.udap.org/udap-dynamic-client-registration-stu1.html
 */
export class UdapRegistrar {
  private readonly bySan = new Map<string, UdapClient>();
  private readonly byId = new Map<string, UdapClient>();
  private readonly jtis = new JtiLedger();

  constructor(private readonly options: RegistrarOptions) {}

  get endpoint(): string {
    return this.options.endpoint;
  }

  client(clientId: string): UdapClient | undefined {
    return this.byId.get(clientId);
  }

  clients(): UdapClient[] {
    return [...this.byId.values()];
  }

  /** After an authentication token signed by a newer certificate of the same SAN: its key is the client's now. */
  rekey(clientId: string, jwk: JWK): void {
    const client = this.byId.get(clientId);
    if (client) client.jwk = jwk;
  }

  async register(body: unknown): Promise<RegistrationAnswer> {
    const now = this.options.now?.() ?? new Date();
    if (typeof body !== 'object' || body === null || Array.isArray(body))
      return refuse('invalid_software_statement', 'the body must be a JSON object');
    const { software_statement: statement, udap } = body as Record<string, unknown>;
    if (udap !== '1') return refuse('invalid_software_statement', 'udap must be "1"');
    if (typeof statement !== 'string' || statement.length > 64 * 1024)
      return refuse('invalid_software_statement', 'software_statement must be a signed JWT');
    let claims: Record<string, unknown>;
    let jwk: JWK;
    try {
      const verified = await verifyUdapJwt(statement, this.options.anchorsPem(), now);
      claims = verified.claims;
      const { iss, jti, exp } = checkLifetime(claims, now);
      if (!verified.sanUris.includes(iss))
        throw new UdapJwtRefused('san-mismatch', `iss ${iss} is not a SAN URI of the certificate`);
      if (claims['sub'] !== iss) throw new UdapJwtRefused('bad-claims', 'sub must equal iss');
      if (!audienceIs(claims, this.options.endpoint))
        throw new UdapJwtRefused('bad-claims', `aud must be this registration endpoint, ${this.options.endpoint}`);
      if (!this.jtis.use(iss, jti, exp, now)) throw new UdapJwtRefused('replayed-jti', 'jti already used');
      jwk = { ...(await exportJWK(verified.leaf.publicKey)), alg: verified.alg, use: 'sig' };
    } catch (error) {
      if (!(error instanceof UdapJwtRefused)) throw error;
      const untrusted = ['untrusted-anchor', 'expired-certificate', 'not-yet-valid-certificate'].includes(error.reason);
      return refuse(untrusted ? 'unapproved_software_statement' : 'invalid_software_statement', error.message);
    }
    const iss = claims['iss'] as string;
    const existing = this.bySan.get(iss);
    const metadata = this.metadataProblem(claims);
    if (typeof metadata === 'string') return refuse('invalid_client_metadata', metadata);
    if (metadata.grantTypes.length === 0) return this.cancel(existing);
    const client: UdapClient = {
      clientId: existing?.clientId ?? `udap-${randomBytes(12).toString('hex')}`,
      sanUri: iss,
      jwk,
      ...metadata,
    };
    this.bySan.set(iss, client);
    this.byId.set(client.clientId, client);
    await this.options.onChange?.(client.clientId, client);
    return { status: existing ? 200 : 201, body: this.answer(client, statement, claims) };
  }

  private async cancel(existing: UdapClient | undefined): Promise<RegistrationAnswer> {
    if (!existing)
      return refuse(
        'invalid_client_metadata',
        'grant_types is empty but no registration exists for this iss to cancel',
      );
    this.bySan.delete(existing.sanUri);
    this.byId.delete(existing.clientId);
    await this.options.onChange?.(existing.clientId, undefined);
    return { status: 200, body: { client_id: existing.clientId, grant_types: [] } };
  }

  /** The registered metadata as RFC 7591 returns it (the statement echoed; JWT claims left out as the IG says). */
  private answer(client: UdapClient, statement: string, claims: Record<string, unknown>): Record<string, unknown> {
    const code = client.grantTypes.includes('authorization_code');
    return {
      client_id: client.clientId,
      software_statement: statement,
      client_name: client.clientName,
      grant_types: client.grantTypes,
      ...(code ? { redirect_uris: client.redirectUris, response_types: ['code'], logo_uri: claims['logo_uri'] } : {}),
      contacts: claims['contacts'],
      token_endpoint_auth_method: 'private_key_jwt',
      scope: client.scope,
    };
  }

  /** The client metadata of a statement, or why it is refused. */
  private metadataProblem(claims: Record<string, unknown>): string | Omit<UdapClient, 'clientId' | 'sanUri' | 'jwk'> {
    const c = claims;
    const grants = c['grant_types'];
    if (!Array.isArray(grants) || !grants.every((g) => typeof g === 'string'))
      return 'grant_types must be a list of strings';
    if (grants.length === 0) return { clientName: '', grantTypes: [], redirectUris: [], scope: '' };
    if (typeof c['client_name'] !== 'string' || c['client_name'].trim() === '') return 'client_name is required';
    const contacts = c['contacts'];
    if (!Array.isArray(contacts) || !contacts.some((x) => typeof x === 'string' && /^mailto:[^@\s]+@[^@\s]+$/.test(x)))
      return 'contacts must hold at least one mailto: address';
    const grantProblem = this.grantTypesProblem(grants as string[]);
    if (grantProblem) return grantProblem;
    if (c['token_endpoint_auth_method'] !== 'private_key_jwt')
      return 'token_endpoint_auth_method must be private_key_jwt';
    if (typeof c['scope'] !== 'string' || c['scope'].trim() === '') return 'scope is required';
    const code = grants.includes('authorization_code');
    const redirects = c['redirect_uris'];
    if (code) {
      if (!Array.isArray(redirects) || redirects.length === 0)
        return 'redirect_uris is required with authorization_code';
      const bad = redirects.find((u) => typeof u !== 'string' || !httpsOrLoopback(u));
      if (bad !== undefined) return `redirect_uris holds ${JSON.stringify(bad)}, which is not an https URI`;
      const logo = c['logo_uri'];
      if (typeof logo !== 'string' || !httpsOrLoopback(logo) || !/\.(png|jpe?g|gif)$/i.test(new URL(logo).pathname))
        return 'logo_uri must be an https URL of a PNG, JPG or GIF image with authorization_code';
      const types = c['response_types'];
      if (!Array.isArray(types) || types.length !== 1 || types[0] !== 'code')
        return 'response_types must be ["code"] with authorization_code';
    } else {
      if (redirects !== undefined) return 'redirect_uris must be absent with client_credentials';
      if (c['response_types'] !== undefined) return 'response_types must be absent with client_credentials';
    }
    const supported = new Set(this.options.scopesSupported());
    const scope = c['scope']
      .split(' ')
      .filter((s) => s && supported.has(s))
      .join(' ');
    if (scope === '') return `none of the scopes "${c['scope'].slice(0, 200)}" is supported here`;
    return {
      clientName: c['client_name'],
      grantTypes: grants as string[],
      redirectUris: code ? (redirects as string[]) : [],
      scope,
    };
  }

  private grantTypesProblem(grants: string[]): string | undefined {
    const unknown = grants.find((g) => !['authorization_code', 'refresh_token', 'client_credentials'].includes(g));
    if (unknown !== undefined) return `grant type ${unknown} is not one UDAP registers`;
    if (new Set(grants).size !== grants.length) return 'grant_types lists a grant type twice';
    const code = grants.includes('authorization_code');
    const credentials = grants.includes('client_credentials');
    if (code && credentials) return 'grant_types holds both authorization_code and client_credentials; register one';
    if (!code && !credentials) return 'grant_types must hold authorization_code or client_credentials';
    if (grants.includes('refresh_token') && !code) return 'refresh_token is only allowed with authorization_code';
    const offered = code ? 'authorization_code' : 'client_credentials';
    if (!this.options.grantTypes.includes(offered)) return `this server does not register ${offered} clients`;
    return undefined;
  }
}
