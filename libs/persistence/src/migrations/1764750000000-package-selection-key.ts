import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The remembered questionnaire choice is keyed by everything that decides it: the tenant and patient (as a keyed
 * hash), the coverage (its id, plan and payor) and the order codes, hashed together (`selection_key`), so no choice
 * is shared across tenants, patients or plans. Choices remembered under the old key (payer and order codes only) are
 * dropped: the next session asks the payer in full.
 */
export class PackageSelectionKey1764750000000 implements MigrationInterface {
  name = 'PackageSelectionKey1764750000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DELETE FROM package_selection`);
    await queryRunner.query(`ALTER TABLE package_selection RENAME COLUMN order_codes TO selection_key`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DELETE FROM package_selection`);
    await queryRunner.query(`ALTER TABLE package_selection RENAME COLUMN selection_key TO order_codes`);
  }
}
