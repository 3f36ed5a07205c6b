import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The form-completion context of a session: one row per questionnaire of the session's package. The questionnaire,
 * the prefill and the clinician's draft are PHI: they are stored only sealed (`*_enc`, AES-GCM through the key ring,
 * AAD naming the row) and the row goes with its session (cascade) or with the purge, which reads `updated_at`.
 * What the EHR holds (its id and version, the ETag of the next update) is kept in clear: ids, not content.
 */
export class FormSessions1764500000000 implements MigrationInterface {
  name = 'FormSessions1764500000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE form_session (
        id uuid PRIMARY KEY,
        session_id_hash text NOT NULL REFERENCES app_session(id_hash) ON DELETE CASCADE,
        tenant_id text NOT NULL,
        patient text NOT NULL,
        payer_id text NOT NULL,
        payer_name text NOT NULL,
        questionnaire_url text NOT NULL,
        questionnaire_version text,
        questionnaire_title text,
        ig_version text NOT NULL,
        status text NOT NULL CHECK (status IN ('not-started', 'in-progress', 'completed', 'stopped')),
        stopped_reason text,
        definition_enc text NOT NULL,
        prefill_enc text NOT NULL,
        draft_enc text,
        conflict_enc text,
        ehr_id text,
        ehr_version_id text,
        ehr_saved_at timestamptz,
        ehr_error text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
      )`);
    await queryRunner.query(`CREATE INDEX form_session_session_idx ON form_session (session_id_hash, created_at)`);
    await queryRunner.query(`CREATE INDEX form_session_updated_idx ON form_session (updated_at)`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE form_session`);
  }
}
