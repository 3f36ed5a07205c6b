/**
 * Encryption at rest as a port (KeyRingSecretBox implements it with the configured key ring); stores only seal and open.
 * `aad` binds a ciphertext to its row and purpose so it cannot be moved to another row.
 */
export abstract class SecretBox {
  abstract seal(plaintext: string, aad: string): string;
  abstract open(ciphertext: string, aad: string): string;
}
