import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DtrError } from '@dtr/kernel';
import { KeyRingSecretBox } from '@dtr/smart';
import type { AppConfig } from '../config/app.config.js';
import type { JsonLogger } from '../logging/json-logger.js';

/**
 * The key ring from DTR_ENCRYPTION_KEYS; outside production, when none is configured, one key generated once and kept
 * in `<DTR_DATA_DIR>/dev-encryption-key` (mode 0600). Production refuses to boot without keys (see app.config.ts).
 */
export function secretBoxFromConfig(config: AppConfig, logger?: JsonLogger): KeyRingSecretBox {
  if (config.encryptionKeys) return new KeyRingSecretBox(config.encryptionKeys);
  if (config.profile === 'production')
    throw new DtrError('CONFIGURATION', 'DTR_ENCRYPTION_KEYS is required in production');
  const file = path.join(config.dataDir, 'dev-encryption-key');
  if (!existsSync(file)) {
    mkdirSync(config.dataDir, { recursive: true });
    try {
      // `wx`: when two processes start at once on a fresh folder, only one key is ever written.
      writeFileSync(file, `dev:${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
      logger?.entry('warn', 'no DTR_ENCRYPTION_KEYS: generated a development key', { file });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  chmodSync(file, 0o600);
  const [kid, material] = readFileSync(file, 'utf8').trim().split(':') as [string, string];
  return new KeyRingSecretBox(new Map([[kid, Buffer.from(material, 'base64')]]));
}
