import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * First schema. Audit events are append-only: an update is always refused, and a delete is refused
 * unless the retention purge job turned it on for its own transaction (`SET LOCAL dtr.audit_purge = 'on'`).
 */
export class InitialSchema1763800000000 implements MigrationInterface {
  name = 'InitialSchema1763800000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE audit_event (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        recorded_at timestamptz NOT NULL DEFAULT now(),
        type_code text NOT NULL,
        subtype_code text,
        action char(1) NOT NULL CHECK (action IN ('C','R','U','D','E')),
        outcome text NOT NULL CHECK (outcome IN ('0','4','8','12')),
        tenant_id text,
        session_id text,
        request_id text,
        agent jsonb NOT NULL DEFAULT '[]'::jsonb,
        entity jsonb NOT NULL DEFAULT '[]'::jsonb,
        detail jsonb NOT NULL DEFAULT '{}'::jsonb
      )`);
    await queryRunner.query(`CREATE INDEX audit_event_recorded_at_idx ON audit_event (recorded_at)`);
    await queryRunner.query(
      `CREATE INDEX audit_event_session_idx ON audit_event (session_id) WHERE session_id IS NOT NULL`,
    );
    await queryRunner.query(`
      CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'DELETE' AND current_setting('dtr.audit_purge', true) = 'on' THEN
          RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
      END $$`);
    await queryRunner.query(`
      CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
      FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE audit_event`);
    await queryRunner.query(`DROP FUNCTION audit_event_append_only()`);
  }
}
