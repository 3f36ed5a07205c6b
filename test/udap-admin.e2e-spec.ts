import { randomBytes } from 'node:crypto';
import { TestCertificateAuthority } from '@dtr/udap';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { spawnServer, type SpawnedServer } from './support/processes.js';
import { leakedSecrets } from './support/secrets.js';

const ADMIN_TOKEN = `admin-${randomBytes(16).toString('hex')}`;
const PASSPHRASE = `p12-${randomBytes(12).toString('hex')}`;
const COMMUNITY = 'https://community.example.org/udap';

interface Outcome {
  resourceType: string;
  issue: Array<{ code: string; diagnostics: string; expression?: string[] }>;
}

/** The UDAP admin API on the running server: operators only, inputs validated, keys and passphrases never echoed. */
describe('UDAP admin API', () => {
  let db: ScratchDatabase;
  let server: SpawnedServer;
  let url: string;
  const ca = TestCertificateAuthority.create('Admin Community CA');
  const ours = ca.issue({
    sanUris: ['https://dtr.example.org/udap/supplement', 'https://dtr.example.org/udap/disclose'],
  });

  const admin = (method: string, path: string, body?: unknown, token = ADMIN_TOKEN) =>
    fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const refused = async (response: Response, status: number): Promise<Outcome['issue'][number]> => {
    expect(response.status).toBe(status);
    const body = (await response.json()) as Outcome;
    expect(body.resourceType).toBe('OperationOutcome');
    return body.issue[0]!;
  };

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_udap_admin');
    server = spawnServer({
      DATABASE_URL: db.url,
      DTR_PORT: '0',
      DTR_ADMIN_TOKEN: ADMIN_TOKEN,
      DTR_ENCRYPTION_KEYS: `k1:${randomBytes(32).toString('base64')}`,
    });
    url = await server.ready;
  });
  afterAll(async () => {
    server?.child.kill('SIGTERM');
    await server?.exited;
    await db?.drop();
  });

  it('needs the admin token', async () => {
    expect((await admin('GET', '/admin/udap/certificates', undefined, 'not-the-admin-token-at-all')).status).toBe(401);
    expect((await fetch(`${url}/admin/udap/anchors`)).status).toBe(401);
  });

  it('refuses a certificate body that is not PEM or PKCS#12, naming the field', async () => {
    const notPem = await refused(
      await admin('POST', '/admin/udap/certificates', { certificatePem: 'hello', privateKeyPem: ours.privateKeyPem }),
      400,
    );
    expect(notPem.diagnostics).toBe('certificatePem: a PEM certificate');
    const extra = await refused(
      await admin('POST', '/admin/udap/certificates', { ...pemBody(), privateKeyPassword: 'x' }),
      400,
    );
    expect(extra.diagnostics).toMatch(/privateKeyPassword|Unrecognized key/);
    const empty = await refused(await admin('POST', '/admin/udap/certificates', {}), 400);
    expect(empty.diagnostics).toMatch(/^certificatePem: /);
    const notBase64 = await refused(
      await admin('POST', '/admin/udap/certificates', { pkcs12: '***', passphrase: 'x' }),
      400,
    );
    expect(notBase64.diagnostics).toMatch(/^pkcs12: /);
  });

  it('adds a certificate from PEM and from PKCS#12; the key and passphrase are never answered or logged', async () => {
    const added = await admin('POST', '/admin/udap/certificates', pemBody());
    expect(added.status).toBe(201);
    const view = (await added.json()) as Record<string, unknown>;
    expect(view).toMatchObject({
      sanUris: ['https://dtr.example.org/udap/supplement', 'https://dtr.example.org/udap/disclose'],
      keyType: 'rsa',
    });
    expect(JSON.stringify(view)).not.toContain('PRIVATE KEY');

    const payer = ca.issue({ sanUris: ['https://dtr.example.org/udap/payer'] });
    const p12 = payer.pkcs12(PASSPHRASE).toString('base64');
    const wrong = await refused(
      await admin('POST', '/admin/udap/certificates', { pkcs12: p12, passphrase: `${PASSPHRASE}-wrong` }),
      400,
    );
    expect(wrong.diagnostics).toMatch(/passphrase/i);
    const ok = await admin('POST', '/admin/udap/certificates', { pkcs12: p12, passphrase: PASSPHRASE });
    expect(ok.status).toBe(201);
    const listed = await (await admin('GET', '/admin/udap/certificates')).text();
    expect(listed).not.toContain('PRIVATE KEY');
    expect((JSON.parse(listed) as unknown[]).length).toBe(2);
    expect(leakedSecrets(server.output() + listed, [PASSPHRASE, `${PASSPHRASE}-wrong`])).toEqual([]);
  });

  it('anchors: validated, listed per community, removed', async () => {
    const bad = await refused(
      await admin('POST', '/admin/udap/anchors', { community: 'nope', pem: ca.anchorPem }),
      400,
    );
    expect(bad.diagnostics).toMatch(/^community: /);
    const leaf = await refused(
      await admin('POST', '/admin/udap/anchors', { community: COMMUNITY, pem: ours.certificatePem }),
      400,
    );
    expect(leaf.diagnostics).toBe('pem: is not a CA certificate (basicConstraints cA is not set)');
    const added = await admin('POST', '/admin/udap/anchors', { community: COMMUNITY, pem: ca.anchorPem });
    expect(added.status).toBe(201);
    const anchor = (await added.json()) as { id: string };
    const list = (await (
      await admin('GET', `/admin/udap/anchors?community=${encodeURIComponent(COMMUNITY)}`)
    ).json()) as unknown[];
    expect(list).toHaveLength(1);
    expect((await admin('DELETE', `/admin/udap/anchors/${anchor.id}`)).status).toBe(204);
    expect((await admin('DELETE', `/admin/udap/anchors/${anchor.id}`)).status).toBe(404);
  });

  it('registrations: an unknown tenant or payer is 404, a bad purpose or contact 400', async () => {
    const purpose = await refused(
      await admin('POST', '/admin/udap/tenants/some-ehr/launch/registration', { san: 'https://dtr.example.org/x' }),
      400,
    );
    expect(purpose.diagnostics).toBe('purpose must be supplement or disclose');
    const tenant = await refused(
      await admin('POST', '/admin/udap/tenants/no-such-ehr/supplement/registration', {
        san: 'https://dtr.example.org/udap/supplement',
      }),
      404,
    );
    expect(tenant.diagnostics).toBe('no tenant no-such-ehr');
    const contact = await refused(
      await admin('POST', '/admin/udap/payers/no-such-payer/registration', {
        san: 'https://dtr.example.org/udap/payer',
        contacts: ['ops@example.org'],
      }),
      400,
    );
    expect(contact.diagnostics).toBe('contacts.0: each contact is a mailto: URI (mailto:ops@example.org)');
    const payer = await refused(
      await admin('POST', '/admin/udap/payers/no-such-payer/registration', {
        san: 'https://dtr.example.org/udap/payer',
      }),
      404,
    );
    expect(payer.diagnostics).toBe('no payer no-such-payer');
  });

  function pemBody() {
    return { certificatePem: ours.certificatePem, privateKeyPem: ours.privateKeyPem };
  }
});
