import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface TestPki {
  /** The PEM text of `<name>.crt` or `<name>.key`. */
  file(name: string): string;
  remove(): void;
}

/**
 * Certificates made with openssl for one test file, valid two days: a payer's CA (`ca`), its server certificate for
 * 127.0.0.1 (`server`), our client certificate from that CA (`client`, CN dtr-backend-mtls) and one from a CA the
 * payer does not trust (`rogue-client` from `rogue-ca`).
 */
export function makeTestPki(): TestPki {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dtr-mtls-'));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  for (const ca of ['ca', 'rogue-ca'])
    openssl('req', '-x509', ...ecKey, '-days', '2', '-subj', `/CN=${ca}`, '-keyout', `${ca}.key`, '-out', `${ca}.crt`);
  const issue = (name: string, ca: string, subject: string, ext?: string) => {
    openssl('req', ...ecKey, '-subj', subject, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    if (ext) writeFileSync(path.join(dir, `${name}.ext`), ext);
    openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${ca}.crt`,
      '-CAkey',
      `${ca}.key`,
      '-CAcreateserial',
      '-days',
      '2',
      '-out',
      `${name}.crt`,
      ...(ext ? ['-extfile', `${name}.ext`] : []),
    );
  };
  issue('server', 'ca', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1\n');
  issue('client', 'ca', '/CN=dtr-backend-mtls');
  issue('rogue-client', 'rogue-ca', '/CN=dtr-backend-rogue');
  return {
    file: (name) => readFileSync(path.join(dir, name), 'utf8'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
