import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { DtrError } from '@dtr/kernel';
import { SecretBox } from './secret-box.js';

const FORMAT = 'v1';
const TAG_BYTES = 16;
const IV_BYTES = 12;

/**
 * Encryption at rest with a key ring: AES-256-GCM, a random 96-bit IV per ciphertext, 128-bit tags enforced (Node
 * otherwise accepts a tag cut to 4 bytes), AAD binding each ciphertext to its row and purpose. Ciphertexts carry the
 * key id, so the first key encrypts and every key of the ring still decrypts (rotation).
 * Format: `v1.<kid>.<iv>.<tag>.<ciphertext>` (base64url parts).
 */
export class KeyRingSecretBox extends SecretBox {
  private readonly primary: string;

  constructor(private readonly keys: ReadonlyMap<string, Buffer>) {
    super();
    const first = [...keys.keys()][0];
    if (!first) throw new DtrError('CONFIGURATION', 'the encryption key ring is empty');
    for (const [kid, key] of keys) {
      if (key.length !== 32) throw new DtrError('CONFIGURATION', `encryption key ${kid} is not 32 bytes`);
    }
    this.primary = first;
  }

  seal(plaintext: string, aad: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.keys.get(this.primary)!, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [
      FORMAT,
      this.primary,
      iv.toString('base64url'),
      cipher.getAuthTag().toString('base64url'),
      ciphertext.toString('base64url'),
    ].join('.');
  }

  open(sealed: string, aad: string): string {
    const parts = sealed.split('.');
    if (parts.length !== 5 || parts[0] !== FORMAT) throw new DtrError('INTERNAL', 'not a sealed value');
    const [, kid, ivText, tagText, dataText] = parts as [string, string, string, string, string];
    const key = this.keys.get(kid);
    if (!key) throw new DtrError('CONFIGURATION', `sealed with key ${kid}, which is not in DTR_ENCRYPTION_KEYS`);
    const iv = Buffer.from(ivText, 'base64url');
    const tag = Buffer.from(tagText, 'base64url');
    if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES)
      throw new DtrError('INTERNAL', 'sealed value has a bad IV or tag length');
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(aad, 'utf8'));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(Buffer.from(dataText, 'base64url')), decipher.final()]).toString('utf8');
    } catch (cause) {
      throw new DtrError('INTERNAL', 'sealed value failed authentication (tampered, or moved to another row)', {
        cause,
      });
    }
  }
}
