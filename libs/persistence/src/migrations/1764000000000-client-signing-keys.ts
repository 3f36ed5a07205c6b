import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Our private_key_jwt signing keys (RS384, ES384). The private JWK is stored only sealed (AES-256-GCM, AAD = kid);
 * the public JWK is served at /.well-known/jwks.json while the key is active or retiring.
 */
export class ClientSigningKeys1764000000000 implements MigrationInterface {
  name = 'ClientSigningKeys1764000000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE client_signing_key (
        kid text PRIMARY KEY,
        alg text NOT NULL CHECK (alg IN ('RS384', 'ES384')),
        public_jwk jsonb NOT NULL,
        private_jwk_enc text NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'retiring', 'retired')),
        created_at timestamptz NOT NULL DEFAULT now(),
        retire_after timestamptz
      )`);
    // At most one active key per algorithm.
    await queryRunner.query(
      `CREATE UNIQUE INDEX client_signing_key_active_idx ON client_signing_key (alg) WHERE status = 'active'`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE client_signing_key`);
  }
}
