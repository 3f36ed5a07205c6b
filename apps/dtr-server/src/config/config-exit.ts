import { ConfigError } from './app.config.js';

/** sysexits(3) EX_CONFIG: the process cannot start with this configuration. */
const EX_CONFIG = 78;

/**
 * The one way a process of ours stops on a bad setting: the message (it names the setting, never its value) on
 * stderr behind the program's name, exit code 78. Any other error is left to the caller.
 */
export function exitOnConfigError(program: string, error: unknown): void {
  if (!(error instanceof ConfigError)) return;
  process.stderr.write(`${program}: ${error.message}\n`);
  process.exit(EX_CONFIG);
}
