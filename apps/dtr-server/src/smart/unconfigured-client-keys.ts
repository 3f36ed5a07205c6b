import { DtrError } from '@dtr/kernel';
import { ClientKeyProvider, type SigningAlg, type SigningCryptoKey } from '@dtr/smart';

/**
 * Stands in for our signing-key store until one is configured: registrations that use private_key_jwt fail with a
 * clear message; client_secret_basic registrations work.
 */
export class UnconfiguredClientKeys extends ClientKeyProvider {
  async privateKey(alg: SigningAlg): Promise<{ key: SigningCryptoKey; kid: string }> {
    throw new DtrError('CONFIGURATION', `no ${alg} signing key is available for private_key_jwt`);
  }
}
