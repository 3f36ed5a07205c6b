import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { TestCertificateAuthority } from '@dtr/udap';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createScratchDatabase, type ScratchDatabase } from './support/databases.js';
import { cliWorkspace } from './support/cli.js';
import { leakedSecrets } from './support/secrets.js';

const SUPPLEMENT = 'https://dtr.example.org/udap/supplement';
const DISCLOSE = 'https://dtr.example.org/udap/disclose';
const COMMUNITY = 'https://community.example.org/udap';
const PASSPHRASE = `p12-${randomBytes(12).toString('hex')}`;

/**
 * `dtr udap …` and `dtr tenant register-udap` on a real database: certificates go in from PEM or PKCS#12 with their
 * keys sealed and never printed, anchors per community, and every refusal is an exit code 1 with a message saying
 * what to fix. (Registration against a live UDAP server is in udap.e2e-spec.ts.)
 */
describe('dtr udap commands on a real database', () => {
  let db: ScratchDatabase;
  const cli = cliWorkspace('dtr-udap-cli');
  const { dir, dtr, file, dump } = cli;
  const ca = TestCertificateAuthority.create('CLI Community CA');
  const ours = ca.issue({ sanUris: [SUPPLEMENT, DISCLOSE] });

  beforeAll(async () => {
    db = await createScratchDatabase(inject('adminDatabaseUrl'), 'dtr_udap_cli');
    cli.useDatabase(db.url);
  });
  afterAll(async () => {
    cli.remove();
    await db?.drop();
  });

  it('certs add from PEM: prints the SAN URIs and validity, never the key; the row holds the key only sealed', async () => {
    const add = dtr([
      'udap',
      'certs',
      'add',
      '--cert',
      file('ours.crt', ours.certificatePem),
      '--key',
      file('ours.key', ours.privateKeyPem),
    ]);
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout)).toMatchObject({ sanUris: [SUPPLEMENT, DISCLOSE], keyType: 'rsa', alg: 'RS256' });
    const list = dtr(['udap', 'certs', 'list']);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ sanUris: string[] }>).map((c) => c.sanUris)).toEqual([
      [SUPPLEMENT, DISCLOSE],
    ]);
    for (const run of [add, list]) expect(run.stdout + run.stderr).not.toContain('PRIVATE KEY');
    expect(await dump('SELECT * FROM udap_identity')).not.toContain('PRIVATE KEY');
  });

  it('certs add from PKCS#12: the passphrase is read from the variable named, a wrong one is refused, never printed', async () => {
    const payer = ca.issue({ sanUris: ['https://dtr.example.org/udap/payer'] });
    const p12 = file('payer.p12', payer.pkcs12(PASSPHRASE));
    const wrong = dtr(['udap', 'certs', 'add', '--p12', p12, '--passphrase-env', 'P12_PASS'], {
      P12_PASS: `${PASSPHRASE}-not`,
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^dtr: .*passphrase/im);
    const unset = dtr(['udap', 'certs', 'add', '--p12', p12, '--passphrase-env', 'P12_PASS']);
    expect(unset.code).toBe(1);
    expect(unset.stderr).toBe('dtr: the environment variable P12_PASS is not set\n');
    const noEnv = dtr(['udap', 'certs', 'add', '--p12', p12]);
    expect(noEnv.code).toBe(1);
    expect(noEnv.stderr).toContain('--p12 needs --passphrase-env <VAR>');
    const ok = dtr(['udap', 'certs', 'add', '--p12', p12, '--passphrase-env', 'P12_PASS'], { P12_PASS: PASSPHRASE });
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ sanUris: ['https://dtr.example.org/udap/payer'] });
    for (const run of [wrong, unset, noEnv, ok])
      expect(leakedSecrets(run.stdout + run.stderr, [PASSPHRASE])).toEqual([]);
  });

  it('certs add without a key, with an unreadable file or a key of another certificate: exit 1 saying what to give', () => {
    const noKey = dtr(['udap', 'certs', 'add', '--cert', path.join(dir, 'ours.crt')]);
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toContain('give --cert <pem> and --key <pem>');
    const missing = dtr([
      'udap',
      'certs',
      'add',
      '--cert',
      path.join(dir, 'nope.crt'),
      '--key',
      path.join(dir, 'ours.key'),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`the certificate file ${path.join(dir, 'nope.crt')} cannot be read (ENOENT)`);
    const other = ca.issue({ sanUris: ['https://dtr.example.org/udap/other'] });
    const mismatch = dtr([
      'udap',
      'certs',
      'add',
      '--cert',
      file('other.crt', other.certificatePem),
      '--key',
      path.join(dir, 'ours.key'),
    ]);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toMatch(/^dtr: .*key/m);
  });

  it('certs remove: removes by id, exit 1 for an unknown one', () => {
    const list = JSON.parse(dtr(['udap', 'certs', 'list']).stdout) as Array<{ id: string; sanUris: string[] }>;
    const payer = list.find((c) => c.sanUris.includes('https://dtr.example.org/udap/payer'))!;
    const removed = dtr(['udap', 'certs', 'remove', payer.id]);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toBe(`removed ${payer.id}\n`);
    const again = dtr(['udap', 'certs', 'remove', payer.id]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`dtr: no UDAP certificate ${payer.id}\n`);
  });

  it('anchors add and list per community; a leaf certificate as an anchor is refused', () => {
    const add = dtr(['udap', 'anchors', 'add', '--community', COMMUNITY, '--pem', file('anchor.pem', ca.anchorPem)]);
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout)).toMatchObject({ community: COMMUNITY, subject: 'CN=CLI Community CA' });
    const list = dtr(['udap', 'anchors', 'list', '--community', COMMUNITY]);
    expect(JSON.parse(list.stdout)).toHaveLength(1);
    const leaf = dtr(['udap', 'anchors', 'add', '--community', COMMUNITY, '--pem', path.join(dir, 'ours.crt')]);
    expect(leaf.code).toBe(1);
    expect(leaf.stderr).toBe('dtr: pem: is not a CA certificate (basicConstraints cA is not set)\n');
    const badCommunity = dtr([
      'udap',
      'anchors',
      'add',
      '--community',
      'community',
      '--pem',
      path.join(dir, 'anchor.pem'),
    ]);
    expect(badCommunity.code).toBe(1);
    expect(badCommunity.stderr).toContain('community: must be a URI');
  });

  it("tenant register-udap: refusals before anything is sent; those about a tenant's registration are audited", async () => {
    const unknown = dtr(['tenant', 'register-udap', 'no-such-ehr', '--purpose', 'supplement', '--san', SUPPLEMENT]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('dtr: no tenant no-such-ehr\n');
    const purpose = dtr(['tenant', 'register-udap', 'x', '--purpose', 'launch', '--san', SUPPLEMENT]);
    expect(purpose.code).toBe(1);
    expect(purpose.stderr).toBe('dtr: --purpose must be supplement or disclose\n');

    const tenant = {
      id: 'udap-ehr',
      name: 'UDAP EHR',
      fhirBase: 'https://ehr.example.org/fhir',
      discloseMode: 'system',
      supplement: {
        clientId: 'placeholder-supplement',
        authMethod: 'private_key_jwt',
        signingAlg: 'ES384',
        scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
        redirectUri: 'https://dtr.example.org/callback',
      },
      disclose: {
        clientId: 'placeholder-disclose',
        authMethod: 'private_key_jwt',
        signingAlg: 'ES384',
        scopes: ['system/QuestionnaireResponse.c', 'system/DocumentReference.c'],
        redirectUri: 'https://dtr.example.org/callback',
      },
    };
    expect(dtr(['tenant', 'put', '--file', file('tenant.json', JSON.stringify(tenant))]).code).toBe(0);
    const noSan = dtr(['tenant', 'register-udap', 'udap-ehr', '--purpose', 'supplement']);
    expect(noSan.code).toBe(1);
    expect(noSan.stderr).toContain('san: is required');
    const badContact = dtr([
      'tenant',
      'register-udap',
      'udap-ehr',
      '--purpose',
      'supplement',
      '--san',
      SUPPLEMENT,
      '--contact',
      'ops@example.org',
    ]);
    expect(badContact.code).toBe(1);
    expect(badContact.stderr).toContain('contacts.0: each contact is a mailto: URI');
    const noAnchor = dtr([
      'tenant',
      'register-udap',
      'udap-ehr',
      '--purpose',
      'disclose',
      '--san',
      DISCLOSE,
      '--community',
      'https://unknown.example.org/udap',
      '--contact',
      'mailto:ops@example.org',
    ]);
    expect(noAnchor.code).toBe(1);
    expect(noAnchor.stderr).toBe(
      'dtr: no trust anchor for the community https://unknown.example.org/udap: add one with "dtr udap anchors add --community https://unknown.example.org/udap --pem <file>"\n',
    );
    const cancelNothing = dtr(['tenant', 'register-udap', 'udap-ehr', '--purpose', 'supplement', '--cancel']);
    expect(cancelNothing.code).toBe(1);
    expect(cancelNothing.stderr).toBe('dtr: tenant udap-ehr has no UDAP supplement registration to cancel\n');
    // The refused attempts on a tenant's registration are in the audit trail, with our error code, never peer text.
    const audit = JSON.parse(
      await dump(`SELECT outcome, detail FROM audit_event WHERE subtype_code = 'udap-registration' ORDER BY seq`),
    ) as Array<{ outcome: string; detail: Record<string, string> }>;
    expect(audit.map((a) => [a.outcome, a.detail['error']])).toEqual([
      ['8', 'CONFIGURATION'],
      ['8', 'NOT_FOUND'],
    ]);
  });
});
