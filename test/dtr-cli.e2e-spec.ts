import { randomBytes } from 'node:crypto';
import { createDataSource } from '@dtr/persistence';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { composeServices } from '../apps/dtr-server/src/compose-services.js';
import { loadAppConfig } from '../apps/dtr-server/src/config/app.config.js';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { makeTestPki, type TestPki } from './support/pki.js';
import { cliWorkspace } from './support/cli.js';
import { leakedSecrets } from './support/secrets.js';

const CLIENT_SECRET = `tenant-secret-${randomBytes(12).toString('hex')}`;

/**
 * The `dtr` command line on a real database with sealed secrets: it composes its services as the server does, so
 * what `dtr tenant put` and `dtr payer put` seal, the server's composition opens (same key ring), and `dtr payer
 * list` reads payers that carry a sealed client key.
 */
describe('dtr tenant and dtr payer on a real database, secrets sealed with the configured key ring', () => {
  let db: ScratchDatabase;
  let pki: TestPki;
  const cli = cliWorkspace('dtr-cli');
  const { env, dump } = cli;
  const dtr = (...args: string[]) => cli.dtr(args);
  const jsonFile = (name: string, value: unknown) => cli.file(name, value as object);

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_cli');
    cli.useDatabase(db.url);
    pki = makeTestPki();
  });

  afterAll(async () => {
    pki?.remove();
    cli.remove();
    await db?.drop();
  });

  it('dtr tenant put, list, show and remove: the client secret is sealed, never printed, and opens in the server composition', async () => {
    const tenant = {
      id: 'cli-ehr',
      name: 'EHR registered from the command line',
      fhirBase: 'https://ehr.example.org/fhir/',
      discloseMode: 'user-delegated',
      supplement: {
        clientId: 'dtr-supplement',
        authMethod: 'client_secret_basic',
        clientSecret: CLIENT_SECRET,
        scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs'],
        redirectUri: 'https://dtr.example.org/callback',
      },
      disclose: {
        clientId: 'dtr-disclose',
        authMethod: 'private_key_jwt',
        signingAlg: 'ES384',
        scopes: ['openid', 'fhirUser', 'user/QuestionnaireResponse.cru'],
        redirectUri: 'https://dtr.example.org/callback',
      },
    };
    const put = dtr('tenant', 'put', '--file', jsonFile('tenant.json', tenant));
    expect(put.code, put.stderr).toBe(0);
    expect(JSON.parse(put.stdout)).toMatchObject({
      id: 'cli-ehr',
      fhirBase: 'https://ehr.example.org/fhir',
      registrations: [
        { purpose: 'disclose', hasSecret: false },
        { purpose: 'supplement', hasSecret: true },
      ],
    });
    const list = dtr('tenant', 'list');
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ id: string }>).map((t) => t.id)).toEqual(['cli-ehr']);
    const show = dtr('tenant', 'show', 'cli-ehr');
    expect(show.code, show.stderr).toBe(0);
    expect(JSON.parse(show.stdout)).toMatchObject({ id: 'cli-ehr', name: tenant.name });
    for (const run of [put, list, show]) expect(leakedSecrets(run.stdout + run.stderr, [CLIENT_SECRET])).toEqual([]);
    expect(leakedSecrets(await dump('SELECT * FROM ehr_registration'), [CLIENT_SECRET])).toEqual([]);

    // The server's composition, on the same database and configuration, opens what the command line sealed.
    const dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    try {
      const services = composeServices(dataSource, loadAppConfig(env));
      expect(await services.tenants.credentialsFor('cli-ehr', 'supplement')).toMatchObject({
        clientSecret: CLIENT_SECRET,
      });
    } finally {
      await dataSource.destroy();
    }

    const missing = dtr('tenant', 'show', 'no-such-ehr');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no tenant no-such-ehr');
    const removed = dtr('tenant', 'remove', 'cli-ehr');
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toBe('removed cli-ehr\n');
    expect(JSON.parse(dtr('tenant', 'list').stdout)).toEqual([]);
  });

  it('dtr payer put and list: a payer with a mutual TLS client key is listed with its certificate facts, the key sealed and never printed', async () => {
    const privateKey = pki.file('client.key');
    const payer = {
      id: 'cli-payer',
      name: 'Payer registered from the command line',
      fhirBase: 'https://payer.example.org/fhir',
      tokenEndpoint: 'https://payer.example.org/token',
      clientId: 'dtr-backend',
      signingAlg: 'ES384',
      scopes: ['system/Questionnaire.rs'],
      coverageIdentifiers: ['http://example.org/payer-id|CLI'],
      clientCertificate: { certificate: pki.file('client.crt'), privateKey, serverCa: pki.file('ca.crt') },
    };
    const put = dtr('payer', 'put', '--file', jsonFile('payer.json', payer));
    expect(put.code, put.stderr).toBe(0);
    expect(JSON.parse(put.stdout)).toMatchObject({
      id: 'cli-payer',
      clientCertificate: { subject: expect.stringContaining('dtr-backend-mtls') },
    });
    const list = dtr('payer', 'list');
    expect(list.code, list.stderr).toBe(0);
    const listed = JSON.parse(list.stdout) as Array<{ id: string; clientCertificate: { fingerprint256: string } }>;
    expect(listed.map((p) => p.id)).toEqual(['cli-payer']);
    expect(listed[0]!.clientCertificate.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    for (const run of [put, list]) expect(run.stdout + run.stderr).not.toContain('PRIVATE KEY');
    expect(await dump('SELECT * FROM payer')).not.toContain('PRIVATE KEY');

    const dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    try {
      const services = composeServices(dataSource, loadAppConfig(env));
      expect((await services.payers.tlsCredentials('cli-payer'))?.privateKey).toBe(privateKey);
    } finally {
      await dataSource.destroy();
    }
  });
});
