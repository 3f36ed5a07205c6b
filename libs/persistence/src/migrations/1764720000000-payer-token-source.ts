import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Which token our calls to a payer carry: our Backend Services token (the default), or the launch's EHR token for
 * a test harness that is EHR and payer at once (checked at use: same origin as the session's EHR, audited).
 */
export class PayerTokenSource1764720000000 implements MigrationInterface {
  name = 'PayerTokenSource1764720000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `ALTER TABLE payer ADD COLUMN token_source text NOT NULL DEFAULT 'backend-services'
         CHECK (token_source IN ('backend-services', 'launch'))`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE payer DROP COLUMN token_source`);
  }
}
