/**
 * Where a secret must never appear (browser responses, pages, logs, database dumps), it is looked for as a plain
 * substring, so a secret glued to other text is still found, and in the encodings it would take on the way
 * (percent-encoded, base64, base64url). Returns a masked label per secret found: never the secret itself.
 */
export function leakedSecrets(text: string, secrets: Iterable<string>): string[] {
  const found: string[] = [];
  for (const secret of secrets) {
    if (secret.length < 8) continue;
    const forms: Array<[string, string]> = [
      ['plain', secret],
      ['percent-encoded', encodeURIComponent(secret)],
      ['base64', Buffer.from(secret).toString('base64').replace(/=+$/, '')],
      ['base64url', Buffer.from(secret).toString('base64url')],
    ];
    const hit = forms.find(([, value]) => text.includes(value));
    if (hit) found.push(`${secret.slice(0, 4)}…(${secret.length} chars, ${hit[0]})`);
  }
  return found;
}
