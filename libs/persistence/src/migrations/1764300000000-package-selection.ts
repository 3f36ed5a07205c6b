import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Which questionnaires a payer answered for an order's codes (payer content, not PHI: no patient, order or coverage
 * id), so the next session for an order with the same codes asks with `changedsince` and reuses the cached content.
 */
export class PackageSelection1764300000000 implements MigrationInterface {
  name = 'PackageSelection1764300000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE package_selection (
        payer_id text NOT NULL REFERENCES payer(id) ON DELETE CASCADE,
        order_codes text NOT NULL,
        questionnaires text[] NOT NULL,
        retrieved_at timestamptz NOT NULL,
        PRIMARY KEY (payer_id, order_codes)
      )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE package_selection`);
  }
}
