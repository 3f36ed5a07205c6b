import { Column, Entity, JoinColumn, ManyToOne, PrimaryColumn } from 'typeorm';
import type { EhrTenantEntity } from './ehr-tenant.entity.js';

export type RegistrationPurpose = 'supplement' | 'disclose';
export type ClientAuthMethod = 'client_secret_basic' | 'private_key_jwt';
export type SigningAlg = 'RS384' | 'ES384';

/** One OAuth client registration of ours at an EHR: `supplement` (read, at launch) or `disclose` (payer-bound writes). */
@Entity({ name: 'ehr_registration' })
export class EhrRegistrationEntity {
  @PrimaryColumn({ name: 'tenant_id', type: 'text' })
  tenantId: string;

  @PrimaryColumn({ type: 'text' })
  purpose: RegistrationPurpose;

  @Column({ name: 'client_id', type: 'text' })
  clientId: string;

  @Column({ name: 'auth_method', type: 'text' })
  authMethod: ClientAuthMethod;

  /** Ciphertext (SecretBox, AAD = `ehr_registration:<tenant>:<purpose>`); never the secret itself. */
  @Column({ name: 'client_secret_enc', type: 'text', nullable: true })
  clientSecretEnc: string | null;

  @Column({ name: 'signing_alg', type: 'text', nullable: true })
  signingAlg: SigningAlg | null;

  /** Space-separated scopes requested with this registration. */
  @Column({ type: 'text' })
  scopes: string;

  @Column({ name: 'redirect_uri', type: 'text' })
  redirectUri: string;

  @ManyToOne('EhrTenantEntity', 'registrations', { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'tenant_id' })
  tenant?: EhrTenantEntity;
}
