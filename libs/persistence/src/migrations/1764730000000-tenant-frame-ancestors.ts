import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The origins allowed to embed the app in a frame for an EHR tenant (CSP `frame-ancestors`); empty for none, which
 * every tenant registered before this migration keeps.
 */
export class TenantFrameAncestors1764730000000 implements MigrationInterface {
  name = 'TenantFrameAncestors1764730000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE ehr_tenant ADD COLUMN frame_ancestors text[] NOT NULL DEFAULT '{}'`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE ehr_tenant DROP COLUMN frame_ancestors`);
  }
}
