import { randomBytes } from 'node:crypto';
import { Agent as HttpsAgent, createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { DtrError, SystemClock } from '@dtr/kernel';
import { BackendServicesClient, KeyRingSecretBox, type SigningKeyStore } from '@dtr/smart';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { deviceOrder, sandboxCoverage } from '../../../test/support/fixtures.js';
import {
  LOOPBACK_POLICY as policy,
  openScratchDataSource,
  type ScratchDataSource,
  signingKeysWithJwks,
} from '../../../test/support/payer-sandbox.js';
import { makeTestPki, type TestPki } from '../../../test/support/pki.js';
import { agentFetch } from './mutual-tls-fetch.js';
import { PayerClient } from './payer-client.js';
import { PayerRegistry } from './payer-registry.service.js';

const COVERAGE = sandboxCoverage('cov-1', 'p1', 'Organization/org-1');
const ORDER = deviceOrder('dr-1', 'p1');

describe('mutual TLS with a payer that requires a client certificate', () => {
  let db: ScratchDataSource;
  let keys: SigningKeyStore;
  let closeJwks: () => Promise<void>;
  let pki: TestPki;
  let mtlsServer: HttpsServer;
  let base: string;
  const seen: Array<{ path: string; subject: string | undefined }> = [];
  const handshakeErrors: string[] = [];
  const file = (name: string) => pki.file(name);

  beforeAll(async () => {
    db = await openScratchDataSource(inject('adminDatabaseUrl'));
    const signing = await signingKeysWithJwks(db.dataSource);
    keys = signing.keys;
    closeJwks = signing.close;
    // A CA of the payer's, its server certificate for 127.0.0.1, our client certificate from that CA, and one from a CA it does not trust.
    pki = makeTestPki();
    mtlsServer = createHttpsServer(
      {
        key: file('server.key'),
        cert: file('server.crt'),
        ca: file('ca.crt'),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        const cn = (req.socket as TLSSocket).getPeerCertificate()?.subject?.CN;
        const subject = Array.isArray(cn) ? cn.join(',') : cn;
        seen.push({ path: req.url ?? '', subject });
        req.resume();
        req.on('end', () => {
          if (req.url === '/token') {
            res.setHeader('content-type', 'application/json');
            res.end(
              JSON.stringify({
                access_token: `mtls-${randomBytes(8).toString('hex')}`,
                token_type: 'bearer',
                expires_in: 300,
              }),
            );
            return;
          }
          res.setHeader('content-type', 'application/fhir+json');
          res.end(
            JSON.stringify({
              resourceType: 'Parameters',
              parameter: [
                { name: 'packagebundle', resource: { resourceType: 'Bundle', type: 'collection', entry: [] } },
              ],
            }),
          );
        });
      },
    );
    // Why the server refused a handshake (the client's certificate, not ours).
    mtlsServer.on('tlsClientError', (error: Error) => handshakeErrors.push(error.message));
    await new Promise<void>((resolve) => mtlsServer.listen(0, '127.0.0.1', resolve));
    base = `https://127.0.0.1:${(mtlsServer.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    mtlsServer?.close();
    pki?.remove();
    await closeJwks?.();
    await db?.close();
  });

  const registryWithBox = () =>
    new PayerRegistry(db.dataSource, policy, new KeyRingSecretBox(new Map([['k1', randomBytes(32)]])));
  const input = (certificate?: Record<string, string> | null) => ({
    id: 'mtls-payer',
    name: 'Payer requiring mutual TLS',
    fhirBase: `${base}/fhir`,
    tokenEndpoint: `${base}/token`,
    clientId: 'dtr-backend',
    signingAlg: 'ES384',
    scopes: ['system/Questionnaire.rs'],
    coverageIdentifiers: ['http://example.org/payer-id|MTLS'],
    ...(certificate !== undefined ? { clientCertificate: certificate } : {}),
  });

  it('stores the client certificate with its key sealed and never returned; refuses a key of another certificate, unreadable PEM and plain http', async () => {
    const registry = registryWithBox();
    const payer = await registry.upsert(
      input({ certificate: file('client.crt'), privateKey: file('client.key'), serverCa: file('ca.crt') }),
    );
    expect(payer.clientCertificate?.subject).toContain('dtr-backend-mtls');
    expect(payer.clientCertificate?.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const everything = JSON.stringify([payer, await registry.list()]);
    expect(everything).not.toContain('PRIVATE KEY');
    const [row] = (await db.dataSource.query(
      `SELECT client_certificate_key_sealed FROM payer WHERE id = 'mtls-payer'`,
    )) as Array<{ client_certificate_key_sealed: string }>;
    expect(row!.client_certificate_key_sealed).not.toContain('PRIVATE KEY');
    // Re-registering without the field keeps the certificate.
    expect((await registry.upsert(input())).clientCertificate?.subject).toContain('dtr-backend-mtls');

    await expect(
      registry.upsert(input({ certificate: file('client.crt'), privateKey: file('rogue-client.key') })),
    ).rejects.toThrow(/clientCertificate.privateKey: does not belong to the certificate/);
    await expect(
      registry.upsert(
        input({
          certificate: '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----',
          privateKey: file('client.key'),
        }),
      ),
    ).rejects.toThrow(/clientCertificate.certificate: is not a readable PEM certificate/);
    await expect(
      registry.upsert({
        ...input({ certificate: file('client.crt'), privateKey: file('client.key') }),
        id: 'mtls-http',
        fhirBase: 'http://127.0.0.1:9/fhir',
        tokenEndpoint: 'http://127.0.0.1:9/token',
      }),
    ).rejects.toThrow(/mutual TLS needs https/);
    await expect(
      new PayerRegistry(db.dataSource, policy).upsert(
        input({ certificate: file('client.crt'), privateKey: file('client.key') }),
      ),
    ).rejects.toThrow(/DTR_ENCRYPTION_KEYS/);
  });

  it('presents the certificate to the token endpoint and the FHIR endpoint; without it, or with one the payer does not trust, a clear error', async () => {
    const registry = registryWithBox();
    const payer = await registry.upsert(
      input({ certificate: file('client.crt'), privateKey: file('client.key'), serverCa: file('ca.crt') }),
    );
    const tls = await registry.tlsCredentials(payer.id);
    expect(tls?.privateKey).toContain('PRIVATE KEY');
    const mark = seen.length;
    const answer = await new PayerClient(
      payer,
      new BackendServicesClient(keys, policy, new SystemClock()),
      policy,
      new SystemClock(),
      { tls: tls! },
    ).questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] });
    expect(answer.bundles).toHaveLength(1);
    expect(seen.slice(mark).map((e) => `${e.path} ${e.subject}`)).toEqual([
      '/token dtr-backend-mtls',
      '/fhir/Questionnaire/$questionnaire-package dtr-backend-mtls',
    ]);

    // A certificate from a CA the payer does not trust: the payer ends the handshake.
    const rogue = {
      certificate: file('rogue-client.crt'),
      privateKey: file('rogue-client.key'),
      serverCa: file('ca.crt'),
    };
    const before = handshakeErrors.length;
    const refused = await new PayerClient(
      payer,
      new BackendServicesClient(keys, policy, new SystemClock()),
      policy,
      new SystemClock(),
      { tls: rogue, retries: 0 },
    )
      .questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DtrError);
    expect(handshakeErrors.length).toBeGreaterThan(before);
    // Trusting the payer's server but presenting no certificate: refused for the missing client certificate.
    const noCertificate = agentFetch(new HttpsAgent({ ca: file('ca.crt') }));
    const afterRogue = handshakeErrors.length;
    const without = await new PayerClient(
      payer,
      new BackendServicesClient(keys, policy, new SystemClock(), noCertificate),
      policy,
      new SystemClock(),
      {
        fetch: noCertificate,
        retries: 0,
      },
    )
      .questionnairePackage({ coverages: [COVERAGE], orders: [ORDER] })
      .catch((e: unknown) => e);
    expect(without).toBeInstanceOf(DtrError);
    expect(handshakeErrors.slice(afterRogue).join(' ')).toMatch(/peer did not return a certificate/);
    expect((without as Error).message).toMatch(/certificate required/);
    // Neither reached the payer's handler.
    expect(seen.length).toBe(mark + 2);
  });
});
