// Registers the sandbox EHR and payer with a running DTR server, as an operator would (README: Registering an EHR /
// a payer). Used by `npm start` and `npm run bench:health`; dev/demo only.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const load = (rel) => import(pathToFileURL(path.join(root, 'dist', rel)).href);

/**
 * @param server the started server (`startServer`): its Nest app and URL
 * @param options the sandbox options (`loadSandboxOptions`): the OAuth clients it created for us, its DTR version
 * @param peers where the sandbox listens: EHR FHIR base, payer FHIR base and token endpoint (and the second payer's,
 *   registered when given)
 */
export async function registerSandboxPeers(server, options, peers) {
  const { TenantRegistry } = await load('libs/smart/src/index.js');
  const { PayerRegistry } = await load('libs/payer/src/index.js');
  const [supplement, disclose] = options.ehrClients;
  await server.app.get(TenantRegistry).upsert({
    id: 'sandbox-ehr',
    name: 'Sandbox EHR',
    fhirBase: peers.ehrFhirBase,
    discloseMode: 'user-delegated',
    supplement: {
      clientId: supplement.clientId,
      authMethod: 'client_secret_basic',
      clientSecret: supplement.clientSecret,
      scopes: [
        'launch',
        'openid',
        'fhirUser',
        'offline_access',
        'patient/*.rs',
        'user/Practitioner.rs',
        'user/PractitionerRole.rs',
        // The coverage's payor, when the coverage names it by reference (its identifiers match the payer).
        'user/Organization.rs',
        // Drafts and the completed QuestionnaireResponse are saved in the EHR with this identity.
        'user/QuestionnaireResponse.cu',
      ],
      redirectUri: `${server.url}/callback`,
    },
    disclose: {
      clientId: disclose.clientId,
      authMethod: 'private_key_jwt',
      signingAlg: 'ES384',
      // The payer-bound copy (DocumentReference + Provenance) is written with this identity only.
      scopes: [
        'openid',
        'fhirUser',
        'patient/*.rs',
        'user/QuestionnaireResponse.cru',
        'user/DocumentReference.c',
        'user/Provenance.c',
      ],
      redirectUri: `${server.url}/callback`,
    },
  });
  const payer = {
    clientId: options.payerClients[0].clientId,
    signingAlg: 'ES384',
    // Package retrieval, and the submission routes (plain FHIR, PAS Claim/$submit, CDex $submit-attachment).
    scopes: [
      'system/Questionnaire.rs',
      'system/Library.rs',
      'system/ValueSet.rs',
      'system/QuestionnaireResponse.c',
      'system/Claim.c',
      'system/DocumentReference.c',
    ],
    submissionRoute: process.env.SANDBOX_PAYER_ROUTE ?? 'bundle',
    igVersion: options.igVersion,
  };
  await server.app.get(PayerRegistry).upsert({
    ...payer,
    id: 'sandbox-payer',
    name: 'Sandbox Health Plan',
    fhirBase: peers.payerFhirBase,
    tokenEndpoint: peers.payerTokenEndpoint,
    coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER'],
  });
  // Another insurer, for the patient covered by both (pat-two-payers): each gets only its own coverage.
  if (peers.secondPayerFhirBase) {
    await server.app.get(PayerRegistry).upsert({
      ...payer,
      id: 'sandbox-payer-2',
      name: 'Second Sandbox Health Plan',
      fhirBase: peers.secondPayerFhirBase,
      tokenEndpoint: peers.secondPayerTokenEndpoint,
      coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER-2'],
    });
  }
}
