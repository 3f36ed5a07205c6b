import { Column, CreateDateColumn, Entity, OneToMany, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import { EhrRegistrationEntity } from './ehr-registration.entity.js';

export type DiscloseMode = 'user-delegated' | 'system';

/** An EHR (FHIR base = SMART `iss`) allowed to launch us, with its two client registrations. */
@Entity({ name: 'ehr_tenant' })
export class EhrTenantEntity {
  @PrimaryColumn({ type: 'text' })
  id: string;

  @Column({ type: 'text' })
  name: string;

  @Column({ name: 'fhir_base', type: 'text', unique: true })
  fhirBase: string;

  @Column({ name: 'disclose_mode', type: 'text' })
  discloseMode: DiscloseMode;

  /** The EHR could register only one client: payer-bound writes reuse it, and every audit record says so. */
  @Column({ name: 'single_client', type: 'boolean', default: false })
  singleClient: boolean;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt: Date;

  @UpdateDateColumn({ name: 'updated_at', type: 'timestamptz' })
  updatedAt: Date;

  @OneToMany(() => EhrRegistrationEntity, (registration) => registration.tenant, { cascade: true, eager: true })
  registrations: EhrRegistrationEntity[];
}
