import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Retention. `scheduled_job` holds one row per background job run on an interval by every instance; the instance that
 * claims the row's lease runs the job, the others skip it (only one purge at a time across instances).
 *
 * The audit trail stays append-only, with one controlled way out, for the retention purge only: the trigger lets a
 * DELETE through only for a row recorded before the cutoff in the transaction-local setting `dtr.audit_purge_before`
 * (set by `audit_event_purge`), and only if that cutoff is at least 365 days in the past. So no setting, no bug and no
 * misconfiguration can delete a recent audit event; UPDATE and TRUNCATE stay refused. The former
 * `dtr.audit_purge = 'on'` switch (which allowed deleting any row) is gone.
 */
export class Retention1764760000000 implements MigrationInterface {
  name = 'Retention1764760000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE scheduled_job (
        name text PRIMARY KEY,
        lease_owner text,
        lease_until timestamptz,
        last_started_at timestamptz,
        last_finished_at timestamptz,
        last_result jsonb
      )`);
    await queryRunner.query(`INSERT INTO scheduled_job (name) VALUES ('purge')`);
    // Ended sessions are found by their idle time too.
    await queryRunner.query(`CREATE INDEX app_session_last_seen_idx ON app_session (last_seen_at)`);
    await queryRunner.query(`CREATE INDEX package_resource_retrieved_idx ON package_resource (payer_id, retrieved_at)`);
    await queryRunner.query(`
      CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE
        cutoff timestamptz;
      BEGIN
        IF TG_OP = 'DELETE' THEN
          cutoff := nullif(current_setting('dtr.audit_purge_before', true), '')::timestamptz;
          IF cutoff IS NOT NULL AND cutoff <= now() - interval '365 days' AND OLD.recorded_at < cutoff THEN
            RETURN OLD;
          END IF;
        END IF;
        RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
      END $$`);
    await queryRunner.query(`
      CREATE FUNCTION audit_event_purge(cutoff timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
      DECLARE
        removed bigint;
      BEGIN
        IF cutoff > now() - interval '365 days' THEN
          RAISE EXCEPTION 'audit events are kept at least 365 days (cutoff % refused)', cutoff
            USING ERRCODE = 'insufficient_privilege';
        END IF;
        PERFORM set_config('dtr.audit_purge_before', cutoff::text, true);
        DELETE FROM audit_event WHERE recorded_at < cutoff;
        GET DIAGNOSTICS removed = ROW_COUNT;
        PERFORM set_config('dtr.audit_purge_before', '', true);
        RETURN removed;
      END $$`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP FUNCTION audit_event_purge(timestamptz)`);
    await queryRunner.query(`
      CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'DELETE' AND current_setting('dtr.audit_purge', true) = 'on' THEN
          RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
      END $$`);
    await queryRunner.query(`DROP INDEX package_resource_retrieved_idx`);
    await queryRunner.query(`DROP INDEX app_session_last_seen_idx`);
    await queryRunner.query(`DROP TABLE scheduled_job`);
  }
}
