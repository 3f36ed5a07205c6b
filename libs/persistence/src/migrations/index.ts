import type { MigrationInterface } from 'typeorm';
import { InitialSchema1763800000000 } from './1763800000000-initial-schema.js';
import { SmartLaunch1763900000000 } from './1763900000000-smart-launch.js';
import { ClientSigningKeys1764000000000 } from './1764000000000-client-signing-keys.js';
import { Payers1764100000000 } from './1764100000000-payers.js';
import { PackageCache1764200000000 } from './1764200000000-package-cache.js';
import { PackageSelection1764300000000 } from './1764300000000-package-selection.js';
import { PayerClientCertificate1764400000000 } from './1764400000000-payer-client-certificate.js';
import { FormSessions1764500000000 } from './1764500000000-form-sessions.js';
import { Disclosure1764600000000 } from './1764600000000-disclosure.js';
import { PayerTokenSource1764720000000 } from './1764720000000-payer-token-source.js';
import { TenantFrameAncestors1764730000000 } from './1764730000000-tenant-frame-ancestors.js';
import { PackageSelectionKey1764750000000 } from './1764750000000-package-selection-key.js';
import { Retention1764760000000 } from './1764760000000-retention.js';
import { Udap1764810000000 } from './1764810000000-udap.js';

/** Every migration, in order. Explicit on purpose: no globs (see STACK.md). */
export const MIGRATIONS: Array<new () => MigrationInterface> = [
  InitialSchema1763800000000,
  SmartLaunch1763900000000,
  ClientSigningKeys1764000000000,
  Payers1764100000000,
  PackageCache1764200000000,
  PackageSelection1764300000000,
  PayerClientCertificate1764400000000,
  FormSessions1764500000000,
  Disclosure1764600000000,
  PayerTokenSource1764720000000,
  TenantFrameAncestors1764730000000,
  PackageSelectionKey1764750000000,
  Retention1764760000000,
  Udap1764810000000,
];
