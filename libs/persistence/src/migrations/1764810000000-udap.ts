import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * UDAP: our certificates (one certificate may carry several SAN URIs, one per identity of ours), their private keys
 * stored only sealed (SecretBox, AAD = `udap_identity:<id>`), the trust anchors of each community we belong to, and a
 * third client authentication method `udap` on EHR registrations and payers (the SAN URI we registered as, the
 * community whose anchors the server's metadata was checked with, and what the server granted; a payer's cancelled
 * UDAP client is kept with the time it was cancelled, so token requests say so). A tenant may name a
 * Tiered OAuth identity provider (`udap_idp`).
 * @see https://hl7.org/fhir/us/udap-security/general.html#certificates
 */
export class Udap1764810000000 implements MigrationInterface {
  name = 'Udap1764810000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE udap_identity (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        x5c jsonb NOT NULL,
        san_uris text[] NOT NULL CHECK (cardinality(san_uris) > 0),
        subject text NOT NULL,
        issuer text NOT NULL,
        not_before timestamptz NOT NULL,
        not_after timestamptz NOT NULL,
        key_type text NOT NULL CHECK (key_type IN ('rsa', 'ec')),
        alg text NOT NULL CHECK (alg IN ('RS256', 'ES256', 'RS384', 'ES384')),
        private_key_enc text NOT NULL,
        fingerprint256 text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now()
      )`);
    await queryRunner.query(`CREATE INDEX udap_identity_san_idx ON udap_identity USING gin (san_uris)`);
    await queryRunner.query(`
      CREATE TABLE udap_trust_anchor (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        community text NOT NULL,
        pem text NOT NULL,
        subject text NOT NULL,
        not_after timestamptz NOT NULL,
        fingerprint256 text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (community, fingerprint256)
      )`);

    // The registration checks are replaced as a whole (their names were chosen by PostgreSQL).
    await dropChecks(queryRunner, 'ehr_registration');
    await queryRunner.query(`
      ALTER TABLE ehr_registration
        ADD COLUMN udap_san text,
        ADD COLUMN udap_community text,
        ADD COLUMN udap_granted jsonb,
        ADD CONSTRAINT ehr_registration_purpose_check CHECK (purpose IN ('supplement', 'disclose')),
        ADD CONSTRAINT ehr_registration_auth_method_check
          CHECK (auth_method IN ('client_secret_basic', 'private_key_jwt', 'udap')),
        ADD CONSTRAINT ehr_registration_signing_alg_check CHECK (signing_alg IN ('RS384', 'ES384')),
        ADD CONSTRAINT ehr_registration_secret_check
          CHECK ((auth_method = 'client_secret_basic') = (client_secret_enc IS NOT NULL)),
        ADD CONSTRAINT ehr_registration_alg_check CHECK ((auth_method = 'private_key_jwt') = (signing_alg IS NOT NULL)),
        ADD CONSTRAINT ehr_registration_udap_check CHECK ((auth_method = 'udap') = (udap_san IS NOT NULL))`);
    await queryRunner.query(`ALTER TABLE ehr_tenant ADD COLUMN udap_idp text`);
    await queryRunner.query(`
      ALTER TABLE payer
        ADD COLUMN auth_method text NOT NULL DEFAULT 'private_key_jwt' CHECK (auth_method IN ('private_key_jwt', 'udap')),
        ADD COLUMN udap_san text,
        ADD COLUMN udap_community text,
        ADD COLUMN udap_granted jsonb,
        ADD COLUMN udap_cancelled_at timestamptz,
        ADD CONSTRAINT payer_udap_check CHECK ((auth_method = 'udap') = (udap_san IS NOT NULL))`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DELETE FROM ehr_registration WHERE auth_method = 'udap'`);
    await dropChecks(queryRunner, 'ehr_registration');
    await queryRunner.query(`
      ALTER TABLE ehr_registration
        DROP COLUMN udap_san, DROP COLUMN udap_community, DROP COLUMN udap_granted,
        ADD CHECK (purpose IN ('supplement', 'disclose')),
        ADD CHECK (auth_method IN ('client_secret_basic', 'private_key_jwt')),
        ADD CHECK (signing_alg IN ('RS384', 'ES384')),
        ADD CHECK ((auth_method = 'client_secret_basic') = (client_secret_enc IS NOT NULL)),
        ADD CHECK ((auth_method = 'private_key_jwt') = (signing_alg IS NOT NULL))`);
    await queryRunner.query(`ALTER TABLE ehr_tenant DROP COLUMN udap_idp`);
    await queryRunner.query(
      `ALTER TABLE payer DROP COLUMN auth_method, DROP COLUMN udap_san, DROP COLUMN udap_community,
         DROP COLUMN udap_granted, DROP COLUMN udap_cancelled_at`,
    );
    await queryRunner.query(`DROP TABLE udap_trust_anchor`);
    await queryRunner.query(`DROP TABLE udap_identity`);
  }
}

async function dropChecks(queryRunner: QueryRunner, table: string): Promise<void> {
  const checks = (await queryRunner.query(
    `SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c'`,
    [table],
  )) as Array<{ conname: string }>;
  for (const { conname } of checks) await queryRunner.query(`ALTER TABLE ${table} DROP CONSTRAINT "${conname}"`);
}
