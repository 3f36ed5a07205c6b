import { createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { DtrError } from '@dtr/kernel';
import type { AppConfig } from '../config/app.config.js';

/**
 * The key of the audit trail's keyed hashes: `DTR_AUDIT_HASH_KEY`, else derived from the first key of
 * `DTR_ENCRYPTION_KEYS`, else (development) from the generated development key. Set `DTR_AUDIT_HASH_KEY` before
 * rotating the encryption keys, or patient searches will not find events hashed under the old key.
 */
export function auditHashKey(config: AppConfig): Buffer {
  if (config.auditHashKey) return config.auditHashKey;
  const first = config.encryptionKeys?.values().next().value;
  if (first) return createHmac('sha256', first).update('dtr-audit-hash').digest();
  const file = path.join(config.dataDir, 'dev-encryption-key');
  if (config.profile === 'production' || !existsSync(file))
    throw new DtrError('CONFIGURATION', 'DTR_AUDIT_HASH_KEY or DTR_ENCRYPTION_KEYS is required for the audit trail');
  const material = readFileSync(file, 'utf8').trim().split(':')[1] ?? '';
  return createHmac('sha256', Buffer.from(material, 'base64')).update('dtr-audit-hash').digest();
}
