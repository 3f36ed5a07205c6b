import { DtrError, parseUntrustedJson } from '@dtr/kernel';

/** UDAP metadata and registration answers are a few KiB; more is refused. */
const UDAP_RESPONSE_MAX_BYTES = 64 * 1024;

/** `host/path` of a URL, for messages (never its query). */
export function placeOf(url: string): string {
  try {
    const u = new URL(url);
    return `${u.host}${u.pathname}`;
  } catch {
    return 'the server';
  }
}

/** Sends a request through the injected fetch; a network failure becomes UPSTREAM_ERROR naming the place. */
export async function send(fetchFn: typeof fetch, url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetchFn(url, { signal: AbortSignal.timeout(10_000), ...init });
  } catch (cause) {
    throw new DtrError('UPSTREAM_ERROR', `${placeOf(url)} could not be reached`, { cause });
  }
}

/**
 * The answer's body as JSON (or `undefined` when empty), read at most `UDAP_RESPONSE_MAX_BYTES` (declared or counted;
 * the transfer is cancelled past it) and parsed with the checks untrusted JSON gets (depth, `__proto__`, NUL).
 */
export async function readJson(response: Response, url: string): Promise<unknown> {
  const tooLarge = () =>
    new DtrError(
      'UPSTREAM_ERROR',
      `${placeOf(url)} answered more than the ${UDAP_RESPONSE_MAX_BYTES / 1024} KiB accepted for UDAP metadata or registration`,
      { details: { maxResponseBytes: UDAP_RESPONSE_MAX_BYTES } },
    );
  if (Number(response.headers.get('content-length') ?? NaN) > UDAP_RESPONSE_MAX_BYTES) {
    await response.body?.cancel().catch(() => undefined);
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  if (response.body) {
    const reader = response.body.getReader();
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > UDAP_RESPONSE_MAX_BYTES) {
        await reader.cancel().catch(() => undefined);
        throw tooLarge();
      }
      chunks.push(value);
    }
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return parseUntrustedJson(text, { maxBytes: UDAP_RESPONSE_MAX_BYTES, maxDepth: 16 });
  } catch (cause) {
    throw new DtrError('UPSTREAM_ERROR', `${placeOf(url)} answered something that is not acceptable JSON`, { cause });
  }
}

const MAX_QUOTED = 300;

/**
 * A peer's words, fit to quote in our messages: at most 300 characters, control characters and quotes escaped
 * (JSON string syntax), so that a hostile server cannot forge lines or markup in logs and pages.
 */
export function quotePeer(value: unknown): string {
  const text = typeof value === 'string' ? value : '';
  const cut = text.length > MAX_QUOTED ? `${text.slice(0, MAX_QUOTED)}…` : text;
  return JSON.stringify(cut).replace(/</g, '\\u003c').replace(/>/g, '\\u003e');
}
