import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { settingsFrom } from '@dtr/kernel';
import { z } from 'zod';
import type { SandboxOptions } from './sandbox.js';
import { DTR_VERSIONS } from '@dtr/fhir';

/**
 * Settings of the sandbox (dev/test only), read from the environment in this one place.
 * Everything binds to loopback by default; ports and URLs are configurable.
 */
const port = z.coerce.number({ error: 'must be a port number (0-65535)' }).int().min(0).max(65535);

const schema = z.object({
  SANDBOX_HOST: z.string().min(1).default('127.0.0.1'),
  SANDBOX_EHR_PORT: port.default(3001),
  SANDBOX_PAYER_PORT: port.default(3002),
  /** The second sandbox payer (another insurer); default: the payer's port + 1, or a free one when that is 0. */
  SANDBOX_SECOND_PAYER_PORT: port.optional(),
  SANDBOX_SEED: z.coerce.number().int().default(20261122),
  SANDBOX_PATIENTS: z.coerce.number().int().min(1).max(500).default(6),
  /** Comma-separated FHIR Bundle files (or folders of them) loaded into the EHR. */
  SANDBOX_BUNDLES: z.string().default(''),
  /** Comma-separated package folders; default: our own fixtures. */
  SANDBOX_PACKAGE_DIRS: z.string().optional(),
  SANDBOX_DTR_VERSION: z.enum(DTR_VERSIONS).default('2.2'),
  SANDBOX_TOKEN_TTL_SECONDS: z.coerce.number().int().positive().optional(),
  /** `1`: the EHR issues a new refresh token at each refresh and the old one is spent (reuse revokes the grant). */
  SANDBOX_ROTATE_REFRESH_TOKENS: z.enum(['0', '1']).default('0'),
  /** Our server, as the sandbox registers it. */
  SANDBOX_APP_URL: z.url().default('http://127.0.0.1:3000'),
  SANDBOX_APP_CLIENT_SECRET: z.string().min(16).optional(),
});

const REPO_ROOT = path.resolve(
  import.meta.dirname,
  '..',
  '..',
  '..',
  ...(import.meta.dirname.includes(`${path.sep}dist${path.sep}`) ? ['..'] : []),
);
const FIXTURE_PACKAGES = path.join(REPO_ROOT, 'apps', 'sandbox', 'fixtures', 'packages');

/** Client ids our server uses at the sandbox, one per identity (see DESIGN.md: two client identities). */
const APP_CLIENT_IDS = {
  supplement: 'dtr-supplement',
  disclose: 'dtr-disclose',
  payer: 'dtr-backend',
} as const;

function expandBundleArgs(value: string): string[] {
  return value
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean)
    .flatMap((entry) => {
      const full = path.resolve(entry);
      return statSync(full).isDirectory()
        ? readdirSync(full)
            .filter((name) => name.endsWith('.json'))
            .sort()
            .map((name) => path.join(full, name))
        : [full];
    });
}

function packageFolders(root: string): string[] {
  try {
    return readdirSync(root)
      .map((name) => path.join(root, name))
      .filter((full) => statSync(full).isDirectory())
      .sort();
  } catch {
    return [];
  }
}

/**
 * The sandbox registers our server's clients as an EHR or payer administrator would:
 * `dtr-supplement` (client secret, read scopes, used at launch), `dtr-disclose` (private_key_jwt from our JWKS
 * URL, used for payer-bound writes; also allowed client_credentials for system-level disclosure) and, at the
 * payer, `dtr-backend` (Backend Services, private_key_jwt).
 */
export function loadSandboxOptions(env: NodeJS.ProcessEnv = process.env, extraArgs: string[] = []): SandboxOptions {
  const input = settingsFrom(env, Object.keys(schema.shape));
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new Error(
      `invalid sandbox configuration:\n${parsed.error.issues.map((i) => `  - ${String(i.path[0])}: ${i.message}`).join('\n')}`,
    );
  }
  const e = parsed.data;
  const appUrl = e.SANDBOX_APP_URL.replace(/\/+$/, '');
  const secret = e.SANDBOX_APP_CLIENT_SECRET ?? 'sandbox-only-supplement-secret';
  return {
    host: e.SANDBOX_HOST,
    ehrPort: e.SANDBOX_EHR_PORT,
    payerPort: e.SANDBOX_PAYER_PORT,
    secondPayerPort: e.SANDBOX_SECOND_PAYER_PORT ?? (e.SANDBOX_PAYER_PORT === 0 ? 0 : e.SANDBOX_PAYER_PORT + 1),
    seed: e.SANDBOX_SEED,
    patientCount: e.SANDBOX_PATIENTS,
    bundleFiles: expandBundleArgs([e.SANDBOX_BUNDLES, ...extraArgs].filter(Boolean).join(',')),
    packageDirs: e.SANDBOX_PACKAGE_DIRS
      ? e.SANDBOX_PACKAGE_DIRS.split(',')
          .map((d) => path.resolve(d.trim()))
          .filter(Boolean)
      : packageFolders(FIXTURE_PACKAGES),
    igVersion: e.SANDBOX_DTR_VERSION,
    ...(e.SANDBOX_TOKEN_TTL_SECONDS ? { accessTokenTtlSeconds: e.SANDBOX_TOKEN_TTL_SECONDS } : {}),
    ...(e.SANDBOX_ROTATE_REFRESH_TOKENS === '1' ? { rotateRefreshTokens: true } : {}),
    appLaunchUrl: `${appUrl}/launch`,
    ehrClients: [
      {
        clientId: APP_CLIENT_IDS.supplement,
        auth: 'client_secret_basic',
        clientSecret: secret,
        redirectUris: [`${appUrl}/callback`],
        grantTypes: ['authorization_code', 'refresh_token'],
      },
      {
        clientId: APP_CLIENT_IDS.disclose,
        auth: 'private_key_jwt',
        jwksUri: `${appUrl}/.well-known/jwks.json`,
        redirectUris: [`${appUrl}/callback`],
        grantTypes: ['authorization_code', 'refresh_token', 'client_credentials'],
        mayDisclose: true,
      },
    ],
    payerClients: [
      {
        clientId: APP_CLIENT_IDS.payer,
        auth: 'private_key_jwt',
        jwksUri: `${appUrl}/.well-known/jwks.json`,
        grantTypes: ['client_credentials'],
      },
    ],
  };
}
