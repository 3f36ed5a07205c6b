import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { Clock, DtrError } from '@dtr/kernel';
import type { DataSource } from 'typeorm';
import { SecretBox } from '../secret-box.js';
import { ClientKeyProvider, type SigningCryptoKey } from '../smart-client.js';
import type { SigningAlg } from '../tenants/tenant.types.js';
import { SigningKeyRepository, type SigningKeyStatus } from './signing-key.repository.js';

export interface SigningKeyView {
  kid: string;
  alg: SigningAlg;
  status: SigningKeyStatus;
  createdAt: Date;
  retireAfter: Date | null;
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/**
 * Our private_key_jwt keys. Private parts are sealed at rest (AAD = kid) and imported only in memory; public parts
 * are served as a JWKS. Rotation makes a new key active and keeps the previous one published (`retiring`) for a grace
 * period, so EHRs and payers that cached our JWKS still verify assertions signed just before the rotation.
 * @see https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html#registering-a-client-communicating-public-keys
 */
export class SigningKeyStore extends ClientKeyProvider {
  private readonly imported = new Map<string, Promise<SigningCryptoKey>>();
  private readonly keys: SigningKeyRepository;

  constructor(
    dataSource: DataSource,
    private readonly secrets: SecretBox,
    private readonly clock: Clock,
    private readonly graceMs = 24 * 60 * 60 * 1000,
  ) {
    super();
    this.keys = new SigningKeyRepository(dataSource);
  }

  /** A new active key for `alg`; the previous active one (if any) starts retiring. */
  async generate(alg: SigningAlg): Promise<SigningKeyView> {
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(publicJwk);
    const privateJwk = await exportJWK(privateKey);
    const published: JWK = { ...publicJwk, kid, alg, use: 'sig' };
    await this.keys.activate(
      {
        kid,
        alg,
        public_jwk: published,
        private_jwk_enc: this.secrets.seal(JSON.stringify(privateJwk), `client_signing_key:${kid}`),
      },
      new Date(this.clock.now().getTime() + this.graceMs),
    );
    return (await this.list()).find((k) => k.kid === kid)!;
  }

  async list(): Promise<SigningKeyView[]> {
    await this.retireExpired();
    const rows = await this.keys.list();
    return rows.map((r) => ({
      kid: r.kid,
      alg: r.alg,
      status: r.status,
      createdAt: r.created_at,
      retireAfter: r.retire_after,
    }));
  }

  /** Public keys of active and retiring keys, never a private member. */
  async publicJwks(): Promise<{ keys: JWK[] }> {
    // Read-only (a public endpoint serves this): a retiring key past its grace is simply not selected.
    const keys = await this.keys.publishedPublicJwks(this.clock.now());
    for (const key of keys) {
      if (PRIVATE_MEMBERS.some((m) => m in key))
        throw new DtrError('INTERNAL', 'a private key member reached the public JWKS');
    }
    return { keys };
  }

  async privateKey(alg: SigningAlg): Promise<{ key: SigningCryptoKey; kid: string }> {
    const row = await this.keys.active(alg);
    if (!row)
      throw new DtrError('CONFIGURATION', `no active ${alg} signing key: run "npx dtr keys generate --alg ${alg}"`);
    let key = this.imported.get(row.kid);
    if (!key) {
      const jwk = JSON.parse(this.secrets.open(row.private_jwk_enc, `client_signing_key:${row.kid}`)) as JWK;
      key = importJWK(jwk, alg) as Promise<SigningCryptoKey>;
      this.imported.set(row.kid, key);
      // A failed import is not remembered: the next call tries again.
      key.catch(() => this.imported.delete(row.kid));
    }
    return { key: await key, kid: row.kid };
  }

  /** Creates the missing active keys (development and sandbox start-up). */
  async ensureKeys(algs: SigningAlg[] = ['RS384', 'ES384']): Promise<SigningKeyView[]> {
    const existing = await this.list();
    const created: SigningKeyView[] = [];
    for (const alg of algs) {
      if (existing.some((k) => k.alg === alg && k.status === 'active')) continue;
      try {
        created.push(await this.generate(alg));
      } catch (error) {
        // Another instance starting at the same moment created it first (unique active key per alg).
        if (!(error instanceof DtrError && error.code === 'CONFLICT')) throw error;
      }
    }
    return created;
  }

  private async retireExpired(): Promise<void> {
    await this.keys.retireExpired(this.clock.now());
  }
}
