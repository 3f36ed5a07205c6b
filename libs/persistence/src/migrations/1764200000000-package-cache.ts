import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Payer package content (Questionnaires, Libraries, ValueSets) cached by canonical and version. Not PHI: payers
 * publish it. `retrieved_at` drives `changedsince` on the next request.
 */
export class PackageCache1764200000000 implements MigrationInterface {
  name = 'PackageCache1764200000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE package_resource (
        payer_id text NOT NULL REFERENCES payer(id) ON DELETE CASCADE,
        resource_type text NOT NULL CHECK (resource_type IN ('Questionnaire', 'Library', 'ValueSet')),
        canonical text NOT NULL,
        version text NOT NULL DEFAULT '',
        resource jsonb NOT NULL,
        retrieved_at timestamptz NOT NULL,
        PRIMARY KEY (payer_id, resource_type, canonical, version)
      )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE package_resource`);
  }
}
