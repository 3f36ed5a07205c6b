import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { DtrVersion } from '@dtr/fhir';
import { SystemClock } from '@dtr/kernel';
import { type Payer, PayerRegistry } from '@dtr/payer';
import { createDataSource, migrate } from '@dtr/persistence';
import { BackendServicesClient, KeyRingSecretBox, type OutboundPolicy, SigningKeyStore } from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { createPayerServer, type PayerServer, sandboxPackageDirs } from '../../apps/sandbox/src/payer/index.js';
import { type PeerServer, startPeerServer } from '../../apps/sandbox/src/shared/peer-server.js';
import { createScratchDatabase } from './databases.js';
import { repoRoot } from './processes.js';

/** Loopback http allowed: the sandbox payer and the test servers listen on 127.0.0.1. */
export const LOOPBACK_POLICY: OutboundPolicy = { allowInsecureLoopback: true };

/** A fixture folder of the payer lib (libs/payer/test-fixtures/<name>). */
export function payerFixture(name: string): string {
  return path.join(repoRoot, 'libs', 'payer', 'test-fixtures', name);
}

/** A copy of a payer fixture folder with text replaced in its files (e.g. a placeholder URL made live). */
export function payerFixtureCopy(name: string, replacements: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `dtr-${name}-`));
  cpSync(payerFixture(name), dir, { recursive: true });
  for (const file of readdirSync(dir)) {
    let text = readFileSync(path.join(dir, file), 'utf8');
    for (const [from, to] of Object.entries(replacements)) text = text.replaceAll(from, to);
    writeFileSync(path.join(dir, file), text);
  }
  return dir;
}

export interface ScratchDataSource {
  url: string;
  dataSource: DataSource;
  close(): Promise<void>;
}

/** A database of the test file's own (migrated) and a DataSource on it: no other file's payers or cache rows. */
export async function openScratchDataSource(adminUrl: string, prefix = 'dtr_payer'): Promise<ScratchDataSource> {
  const db = await createScratchDatabase(adminUrl, prefix);
  await migrate(db.url);
  const dataSource = createDataSource({ url: db.url, poolMax: 4 });
  await dataSource.initialize();
  return {
    url: db.url,
    dataSource,
    async close() {
      await dataSource.destroy();
      await db.drop();
    },
  };
}

/** Our signing keys (sealed with a random key ring), RS384 and ES384 active, and a server publishing their JWKS. */
export async function signingKeysWithJwks(dataSource: DataSource) {
  const keys = new SigningKeyStore(
    dataSource,
    new KeyRingSecretBox(new Map([['k', randomBytes(32)]])),
    new SystemClock(),
  );
  await keys.ensureKeys();
  const server = createServer((_req, res) => {
    void keys.publicJwks().then((jwks) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(jwks));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    keys,
    jwksUri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export interface PayerSandbox {
  dataSource: DataSource;
  keys: SigningKeyStore;
  peer: PeerServer;
  payerServer: PayerServer;
  registry: PayerRegistry;
  tokens: BackendServicesClient;
  /** Registers (or replaces) the sandbox payer as `sandbox-payer`, signing with `alg`, speaking `igVersion`. */
  register(alg: 'RS384' | 'ES384', igVersion?: DtrVersion): Promise<Payer>;
  close(): Promise<void>;
}

/**
 * The sandbox payer over real HTTP on its own database: it trusts our client `dtr-backend` (private_key_jwt, our JWKS
 * served by the test) and serves the sandbox packages plus `packageDirs`.
 */
export async function startPayerSandbox(adminUrl: string, packageDirs: string[] = []): Promise<PayerSandbox> {
  const scratch = await openScratchDataSource(adminUrl);
  const { dataSource } = scratch;
  const signing = await signingKeysWithJwks(dataSource);
  const peer = await startPeerServer('payer', '127.0.0.1', 0);
  const payerServer = await createPayerServer({
    peer,
    clients: [
      {
        clientId: 'dtr-backend',
        auth: 'private_key_jwt',
        jwksUri: signing.jwksUri,
        grantTypes: ['client_credentials'],
      },
    ],
    packageDirs: [...(await sandboxPackageDirs()), ...packageDirs],
  });
  const registry = new PayerRegistry(dataSource, LOOPBACK_POLICY);
  return {
    dataSource,
    keys: signing.keys,
    peer,
    payerServer,
    registry,
    tokens: new BackendServicesClient(signing.keys, LOOPBACK_POLICY, new SystemClock()),
    register: (alg, igVersion = '2.2') =>
      registry.upsert({
        id: 'sandbox-payer',
        name: 'Sandbox payer',
        fhirBase: payerServer.fhirBase,
        tokenEndpoint: payerServer.tokenEndpoint,
        clientId: 'dtr-backend',
        signingAlg: alg,
        scopes: ['system/Questionnaire.rs', 'system/Library.rs', 'system/ValueSet.rs'],
        igVersion,
        coverageIdentifiers: ['http://example.org/payer-id|SANDBOX-PAYER'],
      }),
    async close() {
      await payerServer.close();
      await peer.close();
      await signing.close();
      await scratch.close();
    },
  };
}
