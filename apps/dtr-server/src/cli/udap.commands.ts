import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { DtrError } from '@dtr/kernel';
import type { UdapCertificateInput } from '@dtr/smart';
import type { AppConfig } from '../config/app.config.js';
import type { Services } from '../compose-services.js';

type WithServices = <T>(fn: (services: Services, config: AppConfig) => Promise<T>) => Promise<T>;

const print = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
};
const operator = () => process.env['USER'] ?? 'cli';

/** A file the operator named, read whole; a clear message when it cannot be. */
function readOperatorFile(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    const code = (error as { code?: string }).code;
    throw new DtrError('INVALID_INPUT', `${what} ${file} cannot be read${code ? ` (${code})` : ''}`);
  }
}

interface CertsAddOptions {
  cert?: string;
  key?: string;
  chain?: string;
  p12?: string;
  passphraseEnv?: string;
}

/** The certificate material the flags name: PEM files, or a PKCS#12 file with its passphrase in an environment variable. */
function certificateInput(options: CertsAddOptions): UdapCertificateInput {
  if (options.p12) {
    if (options.cert || options.key || options.chain)
      throw new DtrError('INVALID_INPUT', 'give either --p12 (with --passphrase-env) or --cert and --key, not both');
    if (!options.passphraseEnv)
      throw new DtrError('INVALID_INPUT', '--p12 needs --passphrase-env <VAR>: the variable that holds its passphrase');
    const passphrase = process.env[options.passphraseEnv];
    if (passphrase === undefined)
      throw new DtrError('INVALID_INPUT', `the environment variable ${options.passphraseEnv} is not set`);
    return { pkcs12: readOperatorFile(options.p12, 'the PKCS#12 file'), passphrase };
  }
  if (!options.cert || !options.key)
    throw new DtrError('INVALID_INPUT', 'give --cert <pem> and --key <pem> (and --chain <pem>), or --p12 <file>');
  return {
    certificatePem: readOperatorFile(options.cert, 'the certificate file').toString('utf8'),
    privateKeyPem: readOperatorFile(options.key, 'the key file').toString('utf8'),
    ...(options.chain ? { chainPem: readOperatorFile(options.chain, 'the chain file').toString('utf8') } : {}),
  };
}

interface RegisterOptions {
  san?: string;
  community?: string;
  clientName?: string;
  contact?: string[];
  logoUri?: string;
  scope?: string;
  cancel?: boolean;
}

/** The registration request the flags describe (validated by the registration itself, as the admin API's body is). */
function registerInput(options: RegisterOptions): Record<string, unknown> {
  return {
    ...(options.san !== undefined ? { san: options.san } : {}),
    ...(options.community !== undefined ? { community: options.community } : {}),
    ...(options.clientName !== undefined ? { clientName: options.clientName } : {}),
    ...(options.contact?.length ? { contacts: options.contact } : {}),
    ...(options.logoUri !== undefined ? { logoUri: options.logoUri } : {}),
    ...(options.scope !== undefined ? { scopes: options.scope.split(' ').filter(Boolean) } : {}),
    cancel: options.cancel === true,
  };
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function registrationOptions(command: Command): Command {
  return command
    .option('--san <uri>', 'the SAN URI of our certificate to register as (one of `dtr udap certs list`)')
    .option('--community <uri>', "the community whose trust anchors the server's signed metadata must chain to")
    .option('--client-name <name>', 'client_name of the software statement (default: DTR_UDAP_CLIENT_NAME)')
    .option('--contact <mailto>', 'a contact (mailto:…); repeatable (default: DTR_UDAP_CONTACT)', collect)
    .option('--logo-uri <url>', 'logo_uri for authorization_code registrations (default: DTR_UDAP_LOGO_URI)')
    .option('--scope <scopes>', 'space-separated scopes (default: the registration’s stored scopes)')
    .option('--cancel', 'cancel the client at the server (empty grant_types) and forget it here');
}

/**
 * `dtr udap …` and the `register-udap` subcommands of `dtr tenant` and `dtr payer`:
 *   dtr udap certs add --cert <pem> --key <pem> [--chain <pem>] | --p12 <file> --passphrase-env <VAR>
 *   dtr udap certs list | remove <id>
 *   dtr udap anchors add --community <uri> --pem <file> | list [--community <uri>]
 *   dtr tenant register-udap <tenantId> --purpose supplement|disclose --san <uri> [...]
 *   dtr payer register-udap <payerId> --san <uri> [...]
 * Keys are sealed before they are stored and never printed; a passphrase is read from the environment only.
 */
export function registerUdapCommands(
  program: Command,
  withServices: WithServices,
  parents: { tenant: Command; payer: Command },
): void {
  const udap = program.command('udap').description('UDAP certificates (ours) and community trust anchors');
  const certs = udap.command('certs').description('our UDAP certificates; one may carry several SAN URIs');
  certs
    .command('add')
    .description('add a certificate and its key (the key is sealed, never printed)')
    .option('--cert <pem>', 'the certificate, PEM')
    .option('--key <pem>', 'its private key, PEM (unencrypted PKCS#8 or PKCS#1)')
    .option('--chain <pem>', 'intermediate certificates, PEM')
    .option('--p12 <file>', 'a PKCS#12 file with the certificate, key and chain')
    .option('--passphrase-env <VAR>', 'the environment variable holding the PKCS#12 passphrase')
    .action(async (options: CertsAddOptions) => {
      const input = certificateInput(options);
      print(await withServices((services) => services.udapIdentities.add(input)));
    });
  certs
    .command('list')
    .description('our certificates: SAN URIs, subject, issuer, validity (never a key)')
    .action(async () => print(await withServices((services) => services.udapIdentities.list())));
  certs
    .command('remove <id>')
    .description('remove a certificate and its key')
    .action(async (id: string) => {
      if (!(await withServices((services) => services.udapIdentities.remove(id)))) {
        process.stderr.write(`dtr: no UDAP certificate ${id}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`removed ${id}\n`);
    });

  const anchors = udap.command('anchors').description('trust anchors of the UDAP communities we belong to');
  anchors
    .command('add')
    .description("add a community's trust anchor (a CA certificate)")
    .requiredOption('--community <uri>', 'the community URI')
    .requiredOption('--pem <file>', 'the anchor certificate, PEM')
    .action(async (options: { community: string; pem: string }) => {
      const pem = readOperatorFile(options.pem, 'the anchor file').toString('utf8');
      print(await withServices((services) => services.udapIdentities.addAnchor(options.community, pem)));
    });
  anchors
    .command('list')
    .description('trust anchors, by community')
    .option('--community <uri>', 'only this community')
    .action(async (options: { community?: string }) =>
      print(await withServices((services) => services.udapIdentities.listAnchors(options.community))),
    );

  registrationOptions(
    parents.tenant
      .command('register-udap <tenantId>')
      .description("register one of a tenant's identities with the EHR's UDAP server (again: modify; --cancel)")
      .requiredOption('--purpose <purpose>', 'supplement (launch) or disclose'),
  ).action(async (tenantId: string, options: RegisterOptions & { purpose: string }) => {
    if (options.purpose !== 'supplement' && options.purpose !== 'disclose')
      throw new DtrError('INVALID_INPUT', '--purpose must be supplement or disclose');
    const purpose = options.purpose;
    const result = await withServices((services) =>
      services.tenantUdap.register(tenantId, purpose, registerInput(options), operator()),
    );
    const { tenant: _tenant, ...shown } = result;
    print(shown);
  });

  registrationOptions(
    parents.payer
      .command('register-udap <payerId>')
      .description("register us with a payer's UDAP server for client_credentials (again: modify; --cancel)"),
  ).action(async (payerId: string, options: RegisterOptions) => {
    const result = await withServices((services) =>
      services.payerUdap.register(payerId, registerInput(options), operator()),
    );
    const { payer: _payer, ...shown } = result;
    print(shown);
  });
}
