import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * EHR tenants with their two client registrations, launch attempts, browser sessions and the token vault.
 * Secrets, tokens and PKCE verifiers are stored only as ciphertext (`*_enc`); state values and session ids only
 * as SHA-256 hashes, so a database dump cannot be used to hijack a launch or a session.
 */
export class SmartLaunch1763900000000 implements MigrationInterface {
  name = 'SmartLaunch1763900000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE ehr_tenant (
        id text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
        name text NOT NULL,
        fhir_base text NOT NULL UNIQUE,
        disclose_mode text NOT NULL CHECK (disclose_mode IN ('user-delegated', 'system')),
        single_client boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`);
    await queryRunner.query(`
      CREATE TABLE ehr_registration (
        tenant_id text NOT NULL REFERENCES ehr_tenant(id) ON DELETE CASCADE,
        purpose text NOT NULL CHECK (purpose IN ('supplement', 'disclose')),
        client_id text NOT NULL,
        auth_method text NOT NULL CHECK (auth_method IN ('client_secret_basic', 'private_key_jwt')),
        client_secret_enc text,
        signing_alg text CHECK (signing_alg IN ('RS384', 'ES384')),
        scopes text NOT NULL,
        redirect_uri text NOT NULL,
        PRIMARY KEY (tenant_id, purpose),
        CHECK ((auth_method = 'client_secret_basic') = (client_secret_enc IS NOT NULL)),
        CHECK ((auth_method = 'private_key_jwt') = (signing_alg IS NOT NULL))
      )`);
    await queryRunner.query(`
      CREATE TABLE launch_attempt (
        state_hash text PRIMARY KEY,
        tenant_id text NOT NULL REFERENCES ehr_tenant(id) ON DELETE CASCADE,
        purpose text NOT NULL CHECK (purpose IN ('supplement', 'disclose')),
        kind text NOT NULL CHECK (kind IN ('ehr', 'standalone', 'disclose')),
        fhir_base text NOT NULL,
        issuer text,
        token_endpoint text NOT NULL,
        code_verifier_enc text NOT NULL,
        nonce_hash text,
        browser_binding_hash text NOT NULL,
        session_id_hash text,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        used_at timestamptz
      )`);
    await queryRunner.query(`CREATE INDEX launch_attempt_expires_idx ON launch_attempt (expires_at)`);
    await queryRunner.query(`
      CREATE TABLE app_session (
        id_hash text PRIMARY KEY,
        tenant_id text NOT NULL REFERENCES ehr_tenant(id) ON DELETE CASCADE,
        fhir_base text NOT NULL,
        patient text,
        encounter text,
        fhir_user text,
        context jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_seen_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        revoked_at timestamptz
      )`);
    await queryRunner.query(`CREATE INDEX app_session_expires_idx ON app_session (expires_at)`);
    await queryRunner.query(`
      CREATE TABLE session_token (
        session_id_hash text NOT NULL REFERENCES app_session(id_hash) ON DELETE CASCADE,
        purpose text NOT NULL CHECK (purpose IN ('supplement', 'disclose')),
        fhir_base text NOT NULL,
        token_endpoint text NOT NULL,
        client_id text NOT NULL,
        scope text NOT NULL,
        access_token_enc text NOT NULL,
        refresh_token_enc text,
        id_token_enc text,
        expires_at timestamptz NOT NULL,
        refreshed_count integer NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (session_id_hash, purpose)
      )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE session_token`);
    await queryRunner.query(`DROP TABLE app_session`);
    await queryRunner.query(`DROP TABLE launch_attempt`);
    await queryRunner.query(`DROP TABLE ehr_registration`);
    await queryRunner.query(`DROP TABLE ehr_tenant`);
  }
}
