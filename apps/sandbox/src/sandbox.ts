import { createEhrAuthServer, type EhrAuthServer } from './ehr/auth/index.js';
import { createEhrFhirServer, type EhrFhirServer } from './ehr/fhir/index.js';
import { generatePatients, loadBundleFiles, twoPayerPatient } from './ehr/patients/generator.js';
import { mountDemo } from './demo/demo.routes.js';
import { createPayerServer, type DtrIgVersion, type PayerServer } from './payer/index.js';
import type { SandboxClientConfig } from './shared/clients.js';
import { type PeerServer, startPeerServer } from './shared/peer-server.js';
import { mountSandboxUdap, type SandboxUdap } from './udap/index.js';

/** Where the sandbox EHR also serves the payer's DTR operations (an EHR-and-payer harness). */
export const EHR_HARNESS_PATH = '/harness-payer/fhir';

export interface SandboxOptions {
  host: string;
  /** 0 picks a free port. */
  ehrPort: number;
  payerPort: number;
  /** The second sandbox payer: another insurer, for patients covered by two payers. */
  secondPayerPort: number;
  /** Synthetic patients: deterministic from the seed. */
  seed: number;
  patientCount: number;
  /** Extra FHIR Bundle files loaded into the EHR (e.g. ../shared/corpus/patients/*.json). */
  bundleFiles: string[];
  /** Folders of questionnaire packages the payer serves. */
  packageDirs: string[];
  igVersion: DtrIgVersion;
  ehrClients: SandboxClientConfig[];
  payerClients: SandboxClientConfig[];
  /** Where the demo page sends an EHR launch (`?iss=…&launch=…` is appended). */
  appLaunchUrl: string;
  accessTokenTtlSeconds?: number;
  /** The EHR spends a refresh token at each refresh and issues a new one (reuse then revokes the grant). */
  rotateRefreshTokens?: boolean;
}

export interface RunningSandbox {
  ehr: { peer: PeerServer; auth: EhrAuthServer; fhir: EhrFhirServer; fhirBase: string; demoUrl: string };
  payer: { peer: PeerServer; server: PayerServer; fhirBase: string; tokenEndpoint: string };
  /** Another insurer (payor identifier `http://example.org/payer-id|SANDBOX-PAYER-2`), with its own request log. */
  secondPayer: { peer: PeerServer; server: PayerServer; fhirBase: string; tokenEndpoint: string };
  /** UDAP: the community CA and anchor, each server's discovery and registrations, Tiered OAuth logins. */
  udap: SandboxUdap;
  close(): Promise<void>;
}

/**
 * Starts the sandbox EHR (SMART authorization server + FHIR server + the demo page) and the sandbox payer,
 * each on its own loopback port, as separate peers of our server.
 */
export async function startSandbox(options: SandboxOptions): Promise<RunningSandbox> {
  const ehrPeer = await startPeerServer('ehr', options.host, options.ehrPort);
  const payerPeer = await startPeerServer('payer', options.host, options.payerPort);
  const secondPeer = await startPeerServer('payer', options.host, options.secondPayerPort).catch(async (error) => {
    await Promise.allSettled([ehrPeer.close(), payerPeer.close()]);
    throw error;
  });
  try {
    // Its routes come before the authorization servers' own (registration, token checks, Tiered OAuth).
    const udap = mountSandboxUdap({ ehr: ehrPeer, payer: payerPeer, secondPayer: secondPeer });
    const resources = [
      ...generatePatients({ seed: options.seed, count: options.patientCount }),
      ...twoPayerPatient(),
      ...loadBundleFiles(options.bundleFiles),
    ];
    // The FHIR server checks tokens with the auth server, which needs the FHIR server's patients for its
    // picker: bind the introspection late.
    let auth: EhrAuthServer | undefined;
    const fhir = await createEhrFhirServer({
      peer: ehrPeer,
      resources,
      discloseClients: options.ehrClients.filter((c) => c.mayDisclose).map((c) => c.clientId),
      registeredScopes: (clientId) => udap.udap.ehr.registeredScopes(clientId),
      introspect: async (token) => (auth ? auth.introspect(token) : undefined),
    });
    auth = await createEhrAuthServer({
      peer: ehrPeer,
      clients: options.ehrClients,
      users: fhir.listPractitioners(),
      patients: fhir.listPatients(),
      ...(options.accessTokenTtlSeconds ? { accessTokenTtlSeconds: options.accessTokenTtlSeconds } : {}),
      ...(options.rotateRefreshTokens ? { rotateRefreshTokens: true } : {}),
      loginWithIdp: udap.loginWithIdp,
    });
    const payer = await createPayerServer({
      peer: payerPeer,
      clients: options.payerClients,
      packageDirs: options.packageDirs,
      defaultIgVersion: options.igVersion,
      ...(options.accessTokenTtlSeconds ? { accessTokenTtlSeconds: options.accessTokenTtlSeconds } : {}),
    });
    const second = await createPayerServer({
      peer: secondPeer,
      clients: options.payerClients,
      packageDirs: options.packageDirs,
      defaultIgVersion: options.igVersion,
      ...(options.accessTokenTtlSeconds ? { accessTokenTtlSeconds: options.accessTokenTtlSeconds } : {}),
    });
    await udap.attach({
      ehr: auth,
      payer: payer.clientStore,
      secondPayer: second.clientStore,
      defaultAccountId: fhir.listPractitioners()[0]?.id ?? 'sandbox-user',
    });
    mountDemo({ peer: ehrPeer, fhir, auth, payer, appLaunchUrl: options.appLaunchUrl });
    // The payer's operations on the EHR's origin, taking the EHR's tokens (for `tokenSource: launch` tests).
    const harness = auth;
    payer.mountHarness(ehrPeer, EHR_HARNESS_PATH, (token) => harness.introspect(token));
    return {
      ehr: { peer: ehrPeer, auth, fhir, fhirBase: fhir.baseUrl, demoUrl: `${ehrPeer.origin}/` },
      payer: { peer: payerPeer, server: payer, fhirBase: payer.fhirBase, tokenEndpoint: payer.tokenEndpoint },
      secondPayer: { peer: secondPeer, server: second, fhirBase: second.fhirBase, tokenEndpoint: second.tokenEndpoint },
      udap: udap.udap,
      async close() {
        await Promise.allSettled([auth?.close(), payer.close(), second.close()]);
        await Promise.allSettled([ehrPeer.close(), payerPeer.close(), secondPeer.close()]);
      },
    };
  } catch (error) {
    await Promise.allSettled([ehrPeer.close(), payerPeer.close(), secondPeer.close()]);
    throw error;
  }
}
