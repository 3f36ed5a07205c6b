import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Disclosure: one `submission` per questionnaire response (as the EHR holds it) and payer: the unique key makes a
 * second "Send", or a Send after the form was resumed in another session, the same submission, the `outbox` row that delivers it (written in the same transaction as the submission's move to
 * `queued`, only after the EHR holds the copy); the audit table gains what disclosure audit needs.
 * What leaves for the payer is PHI: the exact bytes, the opaque-id map and the payer's answer are stored sealed
 * (`*_enc`). Submissions are not tied to the browser session (no cascade): delivery outlives it.
 */
export class Disclosure1764600000000 implements MigrationInterface {
  name = 'Disclosure1764600000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE submission (
        id uuid PRIMARY KEY,
        form_id uuid NOT NULL,
        payer_id text NOT NULL,
        tenant_id text NOT NULL,
        session_id_hash text NOT NULL,
        patient_hash text NOT NULL,
        route text NOT NULL,
        ig_version text NOT NULL,
        questionnaire_url text NOT NULL,
        qr_ehr_id text NOT NULL,
        qr_version_id text,
        state text NOT NULL CHECK (state IN ('writing-back', 'write-back-failed', 'queued', 'delivered', 'dead')),
        choices jsonb NOT NULL,
        bundle_enc text NOT NULL,
        sha256 text NOT NULL,
        sha1 text NOT NULL,
        id_map_enc text NOT NULL,
        document_reference text,
        provenance text,
        payer_outcome text,
        payer_answer_enc text,
        last_error text,
        write_lease_until timestamptz,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        UNIQUE (tenant_id, qr_ehr_id, payer_id)
      )`);
    await queryRunner.query(`CREATE INDEX submission_session_idx ON submission (session_id_hash, created_at)`);
    await queryRunner.query(`CREATE INDEX submission_state_idx ON submission (state, updated_at)`);
    await queryRunner.query(`
      CREATE TABLE outbox (
        submission_id uuid PRIMARY KEY REFERENCES submission(id) ON DELETE CASCADE,
        state text NOT NULL CHECK (state IN ('ready', 'done', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        locked_until timestamptz,
        last_error text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
      )`);
    await queryRunner.query(`CREATE INDEX outbox_ready_idx ON outbox (next_attempt_at) WHERE state = 'ready'`);
    // The audit table of the first migration, searchable by patient (a keyed hash), submission and in order.
    await queryRunner.query(`
      ALTER TABLE audit_event ADD COLUMN seq bigserial, ADD COLUMN patient_hash text, ADD COLUMN submission_id uuid`);
    await queryRunner.query(`CREATE UNIQUE INDEX audit_event_seq_idx ON audit_event (seq)`);
    await queryRunner.query(`CREATE INDEX audit_event_patient_idx ON audit_event (patient_hash, recorded_at)`);
    await queryRunner.query(`CREATE INDEX audit_event_submission_idx ON audit_event (submission_id, recorded_at)`);
    // Append-only already refuses UPDATE and DELETE row by row; TRUNCATE is refused too.
    await queryRunner.query(`
      CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
        FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TRIGGER audit_event_no_truncate ON audit_event`);
    await queryRunner.query(
      `ALTER TABLE audit_event DROP COLUMN seq, DROP COLUMN patient_hash, DROP COLUMN submission_id`,
    );
    await queryRunner.query(`DROP TABLE outbox`);
    await queryRunner.query(`DROP TABLE submission`);
  }
}
