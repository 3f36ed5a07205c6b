import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A payer's client certificate for mutual TLS, stored in the registry: the certificate and the CA that signs the
 * payer's server certificate in the clear (public), the private key sealed with the key ring (never returned). The
 * earlier free-text reference to a certificate kept elsewhere is dropped: nothing ever read it.
 */
export class PayerClientCertificate1764400000000 implements MigrationInterface {
  name = 'PayerClientCertificate1764400000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE payer DROP COLUMN client_certificate_ref`);
    await queryRunner.query(
      `ALTER TABLE payer ADD COLUMN client_certificate text, ADD COLUMN client_certificate_key_sealed text, ADD COLUMN server_ca text`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `ALTER TABLE payer DROP COLUMN client_certificate, DROP COLUMN client_certificate_key_sealed, DROP COLUMN server_ca`,
    );
    await queryRunner.query(`ALTER TABLE payer ADD COLUMN client_certificate_ref text`);
  }
}
