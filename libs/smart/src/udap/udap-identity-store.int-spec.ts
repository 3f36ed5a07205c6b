import { randomBytes, X509Certificate } from 'node:crypto';
import { DtrError, FixedClock } from '@dtr/kernel';
import { createDataSource, migrate } from '@dtr/persistence';
import { TestCertificateAuthority } from '@dtr/udap';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from '../../../../test/support/databases.js';
import { KeyRingSecretBox } from '../key-ring-secret-box.js';
import { UdapIdentityStore } from './udap-identity-store.js';

const SUPPLEMENT = 'https://dtr.example.org/udap/supplement';
const DISCLOSE = 'https://dtr.example.org/udap/disclose';
const COMMUNITY = 'https://community.example.org/udap';

describe('UdapIdentityStore (real PostgreSQL)', () => {
  let db: ScratchDatabase;
  let dataSource: DataSource;
  let store: UdapIdentityStore;
  const clock = new FixedClock(new Date());
  const ca = TestCertificateAuthority.create('Community CA');
  const both = ca.issue({ sanUris: [SUPPLEMENT, DISCLOSE] });

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_udap_ids');
    await migrate(db.url);
    dataSource = createDataSource({ url: db.url });
    await dataSource.initialize();
    store = new UdapIdentityStore(dataSource, new KeyRingSecretBox(new Map([['k', randomBytes(32)]])), clock);
  });
  afterAll(async () => {
    await dataSource?.destroy();
    await db?.drop();
  });

  it('adds a PEM certificate with two SAN URIs: the key is sealed in its row, listed facts never show it', async () => {
    const view = await store.add({ certificatePem: both.certificatePem, privateKeyPem: both.privateKeyPem });
    expect(view).toMatchObject({
      sanUris: [SUPPLEMENT, DISCLOSE],
      keyType: 'rsa',
      alg: 'RS256',
      chainLength: expect.any(Number),
      fingerprint256: new X509Certificate(both.certificatePem).fingerprint256,
    });
    const rows = JSON.stringify(await dataSource.query('SELECT * FROM udap_identity'));
    expect(rows).not.toContain('PRIVATE KEY');
    expect(rows).not.toContain(both.privateKeyPem.split('\n')[1]);
    const listed = JSON.stringify(await store.list());
    expect(listed).not.toMatch(/PRIVATE KEY|privateKey|private_key/);
    // Adding the same certificate again answers the stored one.
    expect((await store.add({ certificatePem: both.certificatePem, privateKeyPem: both.privateKeyPem })).id).toBe(
      view.id,
    );
    expect(await store.list()).toHaveLength(1);
  });

  it('one certificate serves both identities: each SAN URI loads the same chain, signing as itself', async () => {
    const supplement = await store.identityFor(SUPPLEMENT);
    const disclose = await store.identityFor(DISCLOSE);
    expect(supplement.sanUri).toBe(SUPPLEMENT);
    expect(disclose.sanUri).toBe(DISCLOSE);
    expect(supplement.x5c[0]).toBe(both.x5c[0]);
    expect(disclose.x5c[0]).toBe(both.x5c[0]);
    expect(supplement.privateKey.asymmetricKeyType).toBe('rsa');
  });

  it('says which command to run for a SAN URI no certificate names, and for one whose certificates all expired', async () => {
    await expect(store.identityFor('https://dtr.example.org/udap/other')).rejects.toThrow(
      /no UDAP certificate names https:\/\/dtr\.example\.org\/udap\/other: add one with "dtr udap certs add"/,
    );
    const later = new UdapIdentityStore(
      dataSource,
      new KeyRingSecretBox(new Map([['k', randomBytes(32)]])),
      new FixedClock(new Date(Date.now() + 2 * 365 * 24 * 3600_000)),
    );
    await expect(later.identityFor(SUPPLEMENT)).rejects.toThrow(/every certificate for .* has expired/);
  });

  it('adds a PKCS#12 file; a wrong passphrase is refused with a message naming it, and nothing is stored', async () => {
    const payerCert = ca.issue({ sanUris: ['https://dtr.example.org/udap/payer'] });
    const before = (await store.list()).length;
    const wrong = await store.add({ pkcs12: payerCert.pkcs12('right one'), passphrase: 'wrong one' }).catch((e) => e);
    expect(wrong).toBeInstanceOf(DtrError);
    expect((wrong as DtrError).code).toBe('INVALID_INPUT');
    expect((wrong as DtrError).message).toMatch(/passphrase/i);
    expect((wrong as DtrError).message).not.toContain('wrong one');
    expect(await store.list()).toHaveLength(before);
    const view = await store.add({ pkcs12: payerCert.pkcs12('right one'), passphrase: 'right one' });
    expect(view.sanUris).toEqual(['https://dtr.example.org/udap/payer']);
    expect((await store.identityFor('https://dtr.example.org/udap/payer')).x5c[0]).toBe(payerCert.x5c[0]);
    expect(JSON.stringify(await dataSource.query('SELECT * FROM udap_identity'))).not.toContain('PRIVATE KEY');
  });

  it('refuses a key of another certificate, and an expired certificate', async () => {
    const other = ca.issue({ sanUris: ['https://dtr.example.org/udap/x'] });
    await expect(
      store.add({ certificatePem: other.certificatePem, privateKeyPem: both.privateKeyPem }),
    ).rejects.toThrow(/does not belong|key/i);
    const expired = ca.issue({
      sanUris: ['https://dtr.example.org/udap/old'],
      notBefore: new Date(Date.now() - 3 * 24 * 3600_000),
      notAfter: new Date(Date.now() - 24 * 3600_000),
    });
    await expect(
      store.add({ certificatePem: expired.certificatePem, privateKeyPem: expired.privateKeyPem }),
    ).rejects.toThrow(/expired/);
  });

  it('removes a certificate: its identities are gone', async () => {
    const view = (await store.list()).find((c) => c.sanUris.includes(SUPPLEMENT))!;
    expect(await store.remove(view.id)).toBe(true);
    expect(await store.remove(view.id)).toBe(false);
    expect(await store.remove('not-a-uuid')).toBe(false);
    await expect(store.identityFor(SUPPLEMENT)).rejects.toThrow(/no UDAP certificate names/);
  });

  it('keeps trust anchors per community; a certificate that is not a CA is refused', async () => {
    await expect(store.anchorsPem(COMMUNITY)).rejects.toThrow(
      `no trust anchor for the community ${COMMUNITY}: add one with "dtr udap anchors add --community ${COMMUNITY} --pem <file>"`,
    );
    const anchor = await store.addAnchor(COMMUNITY, ca.anchorPem);
    expect(anchor).toMatchObject({ community: COMMUNITY, subject: 'CN=Community CA' });
    await store.addAnchor(COMMUNITY, ca.anchorPem);
    const other = TestCertificateAuthority.create('Other CA');
    await store.addAnchor('https://other.example.org/udap', other.anchorPem);
    expect(await store.anchorsPem(COMMUNITY)).toHaveLength(1);
    expect(await store.anchorsPem()).toHaveLength(2);
    expect((await store.listAnchors()).map((a) => a.community)).toEqual([COMMUNITY, 'https://other.example.org/udap']);
    await expect(store.addAnchor(COMMUNITY, both.certificatePem)).rejects.toThrow(/not a CA certificate/);
    await expect(store.addAnchor('not a uri', ca.anchorPem)).rejects.toThrow(/community: must be a URI/);
    await expect(store.addAnchor(COMMUNITY, 'garbage')).rejects.toThrow(/not a readable PEM certificate/);
    expect(await store.removeAnchor(anchor.id)).toBe(true);
    expect(await store.anchorsPem()).toHaveLength(1);
  });
});
