import { loadSandboxOptions } from '../../apps/sandbox/src/sandbox.config.js';
import { type RunningSandbox, startSandbox } from '../../apps/sandbox/src/sandbox.js';

export type { RecordedRequest } from '../../apps/sandbox/src/shared/request-log.js';
export { fingerprint } from '../../apps/sandbox/src/shared/request-log.js';
export { SANDBOX_COMMUNITY_URI } from '../../apps/sandbox/src/udap/index.js';
export type { RunningSandbox };

/**
 * The sandbox EHR and payers in this process on free ports, with one patient: the UDAP peer (community CA, signed
 * metadata, strict registration and token endpoints) of the int specs that drive our UDAP code directly.
 */
export function startUdapSandbox(): Promise<RunningSandbox> {
  return startSandbox(
    loadSandboxOptions({
      SANDBOX_EHR_PORT: '0',
      SANDBOX_PAYER_PORT: '0',
      SANDBOX_PATIENTS: '1',
    } as NodeJS.ProcessEnv),
  );
}
