import { DtrError, parseUntrustedJson } from '@dtr/kernel';

/** What an upstream (EHR, payer, authorization server) answer may be: at most `maxBytes`, nested at most `maxDepth`. */
export interface UpstreamLimits {
  maxBytes: number;
  maxDepth: number;
}

/** 10 MiB: far above one search page (a few hundred resources), below what would strain memory per session. */
export const EHR_RESPONSE_LIMITS: UpstreamLimits = { maxBytes: 10 * 1024 * 1024, maxDepth: 100 };
/** Discovery documents, JWKS and token answers are a few KiB. */
export const DISCOVERY_RESPONSE_LIMITS: UpstreamLimits = { maxBytes: 1024 * 1024, maxDepth: 32 };

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'server';
  }
}

function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return '/';
  }
}

const megabytes = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(bytes < 1024 * 1024 ? 2 : 0)} MB`;

/**
 * A response body as text, refused (UPSTREAM_ERROR naming the limit) past `max` bytes, declared or counted: an
 * upstream never makes us hold more than that. The transfer is cancelled as soon as the limit is passed.
 */
export async function readCapped(response: Response, max: number, url: string): Promise<string> {
  const tooLarge = (size: string) =>
    new DtrError(
      'UPSTREAM_ERROR',
      `${hostOf(url)} answered ${pathOf(url)} with ${size}, more than the ${megabytes(max)} accepted in one response`,
      { details: { maxResponseBytes: max } },
    );
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (declared > max) {
    await response.body?.cancel().catch(() => undefined);
    throw tooLarge(megabytes(declared));
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(`more than ${megabytes(max)}`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Parses an upstream answer with the checks inbound bodies get (nesting depth, `__proto__` and `constructor` keys,
 * NUL characters): a hostile or broken server's answer fails the call with a clear UPSTREAM_ERROR, never a crash or
 * a changed prototype.
 */
function parseUpstreamJson(text: string, limits: UpstreamLimits, url: string): unknown {
  try {
    return parseUntrustedJson(text, { maxBytes: limits.maxBytes, maxDepth: limits.maxDepth });
  } catch (cause) {
    const reason = cause instanceof DtrError ? cause.message : 'not JSON';
    throw new DtrError(
      'UPSTREAM_ERROR',
      `${hostOf(url)} answered ${pathOf(url)} with JSON that is refused: ${reason.replace(/^body is /, '')}`,
      { cause, details: { maxDepth: limits.maxDepth } },
    );
  }
}

/** A JSON answer read within the limits and checked (see readCapped and parseUpstreamJson). */
export async function readUpstreamJson(response: Response, limits: UpstreamLimits, url: string): Promise<unknown> {
  return parseUpstreamJson(await readCapped(response, limits.maxBytes, url), limits, url);
}

/**
 * A `fetch` whose answers are read within the limits before the caller sees them, and, when they are JSON, checked
 * as `parseUpstreamJson` does; the caller gets the same text back. For libraries that read bodies themselves
 * (openid-client: token answers, JWKS).
 */
export function boundedFetch(fetchFn: typeof fetch, limits: UpstreamLimits): typeof fetch {
  const bounded = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const response = await fetchFn(input, init);
    const url = typeof input === 'string' ? input : input instanceof URL ? input.toString() : input.url;
    const text = await readCapped(response, limits.maxBytes, url);
    const type = response.headers.get('content-type') ?? '';
    if (/json/i.test(type) && text.length > 0) parseUpstreamJson(text, limits, url);
    const nullBody = [101, 204, 205, 304].includes(response.status);
    const headers = new Headers(response.headers);
    headers.delete('content-length');
    headers.delete('content-encoding');
    return new Response(nullBody ? null : text, {
      status: response.status,
      statusText: response.statusText,
      headers,
    });
  };
  return bounded as typeof fetch;
}
