import { DtrError } from '@dtr/kernel';
import { query, type Queryable } from '@dtr/persistence';
import type { DataSource } from 'typeorm';
import { isUniqueViolation } from '../unique-violation.js';
import type { ClientAuthMethod, DiscloseMode, RegistrationPurpose, SigningAlg } from './tenant.types.js';

/** One OAuth client registration of ours at an EHR, as stored (its secret sealed). */
export interface StoredRegistration {
  purpose: RegistrationPurpose;
  clientId: string;
  authMethod: ClientAuthMethod;
  /** Ciphertext (SecretBox, AAD = `ehr_registration:<tenant>:<purpose>`); never the secret itself. */
  clientSecretEnc: string | null;
  signingAlg: SigningAlg | null;
  /** Space-separated scopes requested with this registration. */
  scopes: string;
  redirectUri: string;
  /** With `udap`: the SAN URI we registered as (which certificate signs our assertions). */
  udapSan: string | null;
  /** With `udap`: the community whose anchors the EHR's metadata was checked with (null: every community's). */
  udapCommunity: string | null;
  /** With `udap`: the metadata the EHR granted at registration. */
  udapGranted: Record<string, unknown> | null;
}

/** An EHR (FHIR base = SMART `iss`) allowed to launch us, with its client registrations ordered by purpose. */
export interface StoredTenant {
  id: string;
  name: string;
  fhirBase: string;
  discloseMode: DiscloseMode;
  /** The EHR could register only one client: payer-bound writes reuse it, and every audit record says so. */
  singleClient: boolean;
  /** Origins allowed to embed the app in a frame (CSP frame-ancestors); empty: none. */
  frameAncestors: string[];
  /** Tiered OAuth: the identity provider the EHR is asked to authenticate the user with (when it offers udap_to). */
  udapIdp: string | null;
  registrations: StoredRegistration[];
}

interface TenantRow {
  id: string;
  name: string;
  fhir_base: string;
  disclose_mode: DiscloseMode;
  single_client: boolean;
  frame_ancestors: string[];
  udap_idp: string | null;
}

interface RegistrationRow {
  tenant_id: string;
  purpose: RegistrationPurpose;
  client_id: string;
  auth_method: ClientAuthMethod;
  client_secret_enc: string | null;
  signing_alg: SigningAlg | null;
  scopes: string;
  redirect_uri: string;
  udap_san: string | null;
  udap_community: string | null;
  udap_granted: Record<string, unknown> | null;
}

/** The `ehr_tenant` and `ehr_registration` tables. Raw SQL here only; the registration rules live in TenantRegistry. */
export class TenantRepository {
  constructor(private readonly dataSource: DataSource) {}

  async list(): Promise<StoredTenant[]> {
    return this.withRegistrations(
      await query<TenantRow>(
        this.dataSource,
        `SELECT id, name, fhir_base, disclose_mode, single_client, frame_ancestors, udap_idp FROM ehr_tenant ORDER BY id`,
      ),
    );
  }

  async get(id: string): Promise<StoredTenant | undefined> {
    const rows = await query<TenantRow>(
      this.dataSource,
      `SELECT id, name, fhir_base, disclose_mode, single_client, frame_ancestors, udap_idp FROM ehr_tenant WHERE id = $1`,
      [id],
    );
    return (await this.withRegistrations(rows))[0];
  }

  async findByFhirBase(fhirBase: string): Promise<StoredTenant | undefined> {
    const rows = await query<TenantRow>(
      this.dataSource,
      `SELECT id, name, fhir_base, disclose_mode, single_client, frame_ancestors, udap_idp FROM ehr_tenant WHERE fhir_base = $1`,
      [fhirBase],
    );
    return (await this.withRegistrations(rows))[0];
  }

  /** Creates or replaces a tenant and all its registrations at once. CONFLICT when another tenant has its FHIR base. */
  async save(tenant: StoredTenant): Promise<void> {
    try {
      await this.dataSource.transaction(async (manager) => {
        await query(
          manager,
          `INSERT INTO ehr_tenant (id, name, fhir_base, disclose_mode, single_client, frame_ancestors, udap_idp)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, fhir_base = EXCLUDED.fhir_base,
             disclose_mode = EXCLUDED.disclose_mode, single_client = EXCLUDED.single_client,
             frame_ancestors = EXCLUDED.frame_ancestors, udap_idp = EXCLUDED.udap_idp, updated_at = now()`,
          [
            tenant.id,
            tenant.name,
            tenant.fhirBase,
            tenant.discloseMode,
            tenant.singleClient,
            tenant.frameAncestors,
            tenant.udapIdp,
          ],
        );
        await query(manager, `DELETE FROM ehr_registration WHERE tenant_id = $1`, [tenant.id]);
        for (const r of tenant.registrations) await insertRegistration(manager, tenant.id, r);
      });
    } catch (error) {
      if (isUniqueViolation(error))
        throw new DtrError('CONFLICT', 'fhirBase is already registered as another tenant', { cause: error });
      throw error;
    }
  }

  /** Creates or replaces one registration of an existing tenant (a UDAP registration's answer). */
  async putRegistration(tenantId: string, registration: StoredRegistration): Promise<void> {
    await this.dataSource.transaction(async (manager) => {
      await query(manager, `DELETE FROM ehr_registration WHERE tenant_id = $1 AND purpose = $2`, [
        tenantId,
        registration.purpose,
      ]);
      await insertRegistration(manager, tenantId, registration);
    });
  }

  /** Removes one registration (a cancelled UDAP client); false when there was none. */
  async removeRegistration(tenantId: string, purpose: RegistrationPurpose): Promise<boolean> {
    const rows = await query(
      this.dataSource,
      `DELETE FROM ehr_registration WHERE tenant_id = $1 AND purpose = $2 RETURNING purpose`,
      [tenantId, purpose],
    );
    return rows.length > 0;
  }

  /** The origins that may frame the app for this tenant (one small query: asked on every session request). */
  async frameAncestors(id: string): Promise<string[]> {
    const rows = await query<{ frame_ancestors: string[] }>(
      this.dataSource,
      `SELECT frame_ancestors FROM ehr_tenant WHERE id = $1`,
      [id],
    );
    return rows[0]?.frame_ancestors ?? [];
  }

  /** Removes a tenant; its registrations, launch attempts and sessions go with it (ON DELETE CASCADE). */
  async remove(id: string): Promise<boolean> {
    return (await query(this.dataSource, `DELETE FROM ehr_tenant WHERE id = $1 RETURNING id`, [id])).length > 0;
  }

  private async withRegistrations(tenants: TenantRow[]): Promise<StoredTenant[]> {
    if (tenants.length === 0) return [];
    const registrations = await query<RegistrationRow>(
      this.dataSource,
      `SELECT tenant_id, purpose, client_id, auth_method, client_secret_enc, signing_alg, scopes, redirect_uri,
              udap_san, udap_community, udap_granted
       FROM ehr_registration WHERE tenant_id = ANY($1) ORDER BY tenant_id, purpose`,
      [tenants.map((t) => t.id)],
    );
    return tenants.map((t) => ({
      id: t.id,
      name: t.name,
      fhirBase: t.fhir_base,
      discloseMode: t.disclose_mode,
      singleClient: t.single_client,
      frameAncestors: t.frame_ancestors,
      udapIdp: t.udap_idp,
      registrations: registrations
        .filter((r) => r.tenant_id === t.id)
        .map((r) => ({
          purpose: r.purpose,
          clientId: r.client_id,
          authMethod: r.auth_method,
          clientSecretEnc: r.client_secret_enc,
          signingAlg: r.signing_alg,
          scopes: r.scopes,
          redirectUri: r.redirect_uri,
          udapSan: r.udap_san,
          udapCommunity: r.udap_community,
          udapGranted: r.udap_granted,
        })),
    }));
  }
}

async function insertRegistration(db: Queryable, tenantId: string, r: StoredRegistration): Promise<void> {
  await query(
    db,
    `INSERT INTO ehr_registration (tenant_id, purpose, client_id, auth_method, client_secret_enc, signing_alg,
                                   scopes, redirect_uri, udap_san, udap_community, udap_granted)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
    [
      tenantId,
      r.purpose,
      r.clientId,
      r.authMethod,
      r.clientSecretEnc,
      r.signingAlg,
      r.scopes,
      r.redirectUri,
      r.udapSan,
      r.udapCommunity,
      r.udapGranted === null ? null : JSON.stringify(r.udapGranted),
    ],
  );
}
