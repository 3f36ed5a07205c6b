import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { SecretBox } from '../secret-box.js';

/**
 * A SecretBox for unit and integration tests of this lib (AES-256-GCM with a random per-instance key).
 * The application uses the key ring from libs/keys.
 */
export class TestSecretBox extends SecretBox {
  private readonly key = randomBytes(32);

  seal(plaintext: string, aad: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(aad));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return ['t1', iv, cipher.getAuthTag(), ct].map((p) => (typeof p === 'string' ? p : p.toString('base64url'))).join('.');
  }

  open(ciphertext: string, aad: string): string {
    const [, iv, tag, ct] = ciphertext.split('.');
    const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv!, 'base64url'), { authTagLength: 16 });
    decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(Buffer.from(tag!, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(ct!, 'base64url')), decipher.final()]).toString('utf8');
  }
}
