// HTML written by our pages (server and sandbox): one escaping rule, and a tagged template that escapes every
// interpolated value unless it is SafeHtml.

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/** A string already escaped (or written by us), safe to interpolate into `html`. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/** Tagged template: every interpolated value is escaped unless it is SafeHtml (or an array of them). */
export function html(strings: TemplateStringsArray, ...values: unknown[]): SafeHtml {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    const rendered = Array.isArray(value)
      ? value.map((v) => (v instanceof SafeHtml ? v.value : escapeHtml(v))).join('')
      : value instanceof SafeHtml
        ? value.value
        : escapeHtml(value ?? '');
    out += rendered + (strings[i + 1] ?? '');
  });
  return new SafeHtml(out);
}
