import type { TestCertificateAuthority } from '@dtr/udap';
import type { Request, Response } from 'express';
import type { EhrAuthServer, InteractionDetails } from '../ehr/auth/index.js';
import { EHR_PATHS, PAYER_PATHS } from '../shared/clients.js';
import type { PeerServer } from '../shared/peer-server.js';
import { SANDBOX_COMMUNITY_URI, SandboxUdapCommunity, mountCommunityRoutes } from './community.js';
import { type TieredLogin, TieredOAuth, mountSandboxIdp } from './tiered-oauth.js';
import { type ProviderHandle, UdapServer } from './udap-server.js';

export { SANDBOX_COMMUNITY_URI };

/** The sandbox's UDAP side, as tests and `npm start` reach it. */
export interface SandboxUdap {
  /** The community's CA: `ca.issue({sanUris})` gives a client certificate the sandbox's servers trust. */
  ca: TestCertificateAuthority;
  /** A CA no sandbox server trusts (its certificates are refused as `untrusted-anchor`). */
  untrustedCa: TestCertificateAuthority;
  anchorPem: string;
  ehr: UdapServer;
  payer: UdapServer;
  secondPayer: UdapServer;
  /** The sandbox's UDAP identity provider (Tiered OAuth), `{ehrOrigin}/idp`. */
  idp: UdapServer;
  /** Identity providers the EHR trusts for Tiered OAuth (base URLs); tests may add or remove. */
  trustedIdps: string[];
  /** Logins the EHR delegated to an identity provider, in order. */
  tieredLogins(): TieredLogin[];
}

/** The UDAP wiring of the sandbox: mounted before the authorization servers, attached to them once they exist. */
export interface SandboxUdapWiring {
  udap: SandboxUdap;
  /** For the EHR's authorization server: the Tiered OAuth login. */
  loginWithIdp(req: Request, res: Response, details: InteractionDetails): Promise<boolean>;
  /** `defaultAccountId`: the EHR user an identity provider's users are mapped to. */
  attach(stores: {
    ehr: EhrAuthServer;
    payer: ProviderHandle;
    secondPayer: ProviderHandle;
    defaultAccountId: string;
  }): Promise<void>;
}

const PAYER_SCOPES_LISTED = ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs', 'system/*.rs'];

function payerUdap(peer: PeerServer, community: SandboxUdapCommunity): UdapServer {
  const issuer = `${peer.origin}${PAYER_PATHS.auth}`;
  const server = new UdapServer({
    peer,
    community,
    baseUrl: `${peer.origin}${PAYER_PATHS.fhir}`,
    tokenEndpoint: `${issuer}/token`,
    registrationEndpoint: `${issuer}/register`,
    profiles: ['udap_dcr', 'udap_authn', 'udap_authz'],
    grantTypes: ['client_credentials'],
    scopesSupported: PAYER_SCOPES_LISTED,
    extensionsSupported: ['hl7-b2b'],
    extensionsRequired: ['hl7-b2b'],
  });
  server.mountDiscovery(`${PAYER_PATHS.fhir}/.well-known/udap`);
  server.mountAuthRoutes(peer.app, PAYER_PATHS.auth);
  return server;
}

/**
 * The sandbox's UDAP mode (dev/test only): the community CA and its HTTP routes on the EHR peer, UDAP discovery,
 * registration and token checks for the EHR and both payers, the sandbox IdP and the EHR's Tiered OAuth. Call before
 * the authorization servers are created (its routes must come first), then `attach` them.
 */
export function mountSandboxUdap(peers: {
  ehr: PeerServer;
  payer: PeerServer;
  secondPayer: PeerServer;
}): SandboxUdapWiring {
  const community = new SandboxUdapCommunity();
  const ehrPeer = peers.ehr;
  mountCommunityRoutes(ehrPeer, community);
  const issuer = `${ehrPeer.origin}${EHR_PATHS.auth}`;
  const ehrBase = `${ehrPeer.origin}${EHR_PATHS.fhir}`;
  const ehr = new UdapServer({
    peer: ehrPeer,
    community,
    baseUrl: ehrBase,
    authorizationEndpoint: `${issuer}/auth`,
    tokenEndpoint: `${issuer}/token`,
    registrationEndpoint: `${issuer}/register`,
    profiles: ['udap_dcr', 'udap_authn', 'udap_authz', 'udap_to'],
    grantTypes: ['authorization_code', 'client_credentials'],
    scopesSupported: [
      'openid',
      'fhirUser',
      'udap',
      'launch',
      'launch/patient',
      'offline_access',
      'patient/*.rs',
      'user/*.rs',
      'system/*.rs',
    ],
    extensionsSupported: ['hl7-b2b'],
  });
  ehr.mountDiscovery(`${EHR_PATHS.fhir}/.well-known/udap`);
  ehr.mountAuthRoutes(ehrPeer.app, EHR_PATHS.auth);
  const idp = mountSandboxIdp(ehrPeer, community);
  const trustedIdps = [idp.baseUrl];
  let auth: EhrAuthServer | undefined;
  const accounts = { first: 'sandbox-user' };
  const tiered = new TieredOAuth({
    peer: ehrPeer,
    community,
    ehrBase,
    trustedIdps,
    accountFor: () => accounts.first,
    finishLogin: (req, res, accountId) => auth!.finishLogin(req, res, accountId),
    finishWithError: (req, res, error, description) => auth!.finishWithError(req, res, error, description),
  });
  const udap: SandboxUdap = {
    ca: community.ca,
    untrustedCa: community.untrustedCa,
    anchorPem: community.anchorPem,
    ehr,
    payer: payerUdap(peers.payer, community),
    secondPayer: payerUdap(peers.secondPayer, community),
    idp,
    trustedIdps,
    tieredLogins: () => tiered.tieredLogins(),
  };
  return {
    udap,
    loginWithIdp: (req, res, details) => tiered.login(req, res, details),
    async attach(stores) {
      auth = stores.ehr;
      accounts.first = stores.defaultAccountId;
      await ehr.attach(stores.ehr.clientStore);
      await udap.payer.attach(stores.payer);
      await udap.secondPayer.attach(stores.secondPayer);
    },
  };
}
