/**
 * Encryption at rest as a port: the key ring lives elsewhere (libs/keys); this lib only needs to seal and open.
 * `aad` binds a ciphertext to its row and purpose so it cannot be moved to another row.
 */
export abstract class SecretBox {
  abstract seal(plaintext: string, aad: string): string;
  abstract open(ciphertext: string, aad: string): string;
}
