import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Payers we talk to (SMART Backend Services), how coverages map to them, and the DTR version each speaks. */
export class Payers1764100000000 implements MigrationInterface {
  name = 'Payers1764100000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE payer (
        id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
        name text NOT NULL,
        fhir_base text NOT NULL UNIQUE,
        token_endpoint text NOT NULL,
        client_id text NOT NULL,
        signing_alg text NOT NULL CHECK (signing_alg IN ('RS384', 'ES384')),
        scopes text NOT NULL,
        ig_version text NOT NULL DEFAULT '2.2' CHECK (ig_version IN ('2.0.1', '2.1', '2.2')),
        submission_route text NOT NULL DEFAULT 'bundle' CHECK (submission_route IN ('bundle', 'pas-claim-submit', 'cdex-submit-attachment')),
        coverage_identifiers text[] NOT NULL DEFAULT '{}',
        client_certificate_ref text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE payer`);
  }
}
