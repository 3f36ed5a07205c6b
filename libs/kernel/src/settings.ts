/**
 * The named settings present in an environment. Empty strings count as unset, as a shell `FOO=` usually means, so
 * a blank value falls back to the default instead of failing validation.
 */
export function settingsFrom(
  env: Record<string, string | undefined>,
  names: readonly string[],
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of names) {
    const value = env[name];
    if (value !== undefined && value !== '') out[name] = value;
  }
  return out;
}
