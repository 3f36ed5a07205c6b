import { DtrError } from '@dtr/kernel';
import {
  assertFhirId,
  assertResourceType,
  type Bundle,
  FhirClient,
  type FhirResource,
  type SearchOptions,
  type SearchParams,
  type SearchResult,
} from './fhir-client.js';

export interface HttpFhirClientOptions {
  baseUrl: string;
  /** Bearer token for each request (called per request so a refreshed token is used). */
  accessToken?: () => Promise<string>;
  fetch?: typeof fetch;
  timeoutMs?: number;
  /** Retries for idempotent requests on 429/502/503/504 and network errors (default 2). */
  retries?: number;
  /** Base delay of the exponential backoff, ms (default 200); `Retry-After` wins when given (capped at 5 s). */
  backoffMs?: number;
  /**
   * The largest response body accepted, in bytes (default 64 MiB: far above a search page or a questionnaire
   * package). A larger one fails the exchange as soon as the limit is passed, so a faulty server cannot fill memory.
   */
  maxResponseBytes?: number;
  /** Called once per HTTP exchange (for the audit/minimum-necessary record). Never receives the token. */
  onExchange?: (exchange: { method: string; url: string; status: number | 'error'; ms: number }) => void;
}

const RETRYABLE = new Set([429, 502, 503, 504]);
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json';

/** Longer search URLs go as a POST to `_search` (servers and proxies commonly cap URLs near 2–8 KB). */
const MAX_GET_URL = 2000;

/**
 * FHIR over HTTP: paging through `next` links (only on this base), bounded retries with backoff for idempotent
 * calls, OperationOutcome bodies turned into DtrErrors once, here.
 */
export class HttpFhirClient extends FhirClient {
  readonly baseUrl: string;
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly maxResponseBytes: number;

  constructor(private readonly options: HttpFhirClientOptions) {
    super();
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.fetchFn = options.fetch ?? fetch;
    this.timeoutMs = options.timeoutMs ?? 15_000;
    this.retries = options.retries ?? 2;
    this.backoffMs = options.backoffMs ?? 200;
    this.maxResponseBytes = options.maxResponseBytes ?? MAX_RESPONSE_BYTES;
  }

  async read<T extends FhirResource>(resourceType: string, id: string): Promise<T | undefined> {
    assertResourceType(resourceType);
    assertFhirId(id);
    const response = await this.exchange('GET', `${this.baseUrl}/${resourceType}/${id}`, undefined, true, [404, 410]);
    return response.status === 404 || response.status === 410
      ? undefined
      : ((await this.json(response, response.url || `${this.baseUrl}/${resourceType}`)) as T);
  }

  async search<T extends FhirResource>(
    resourceType: string,
    params: SearchParams = {},
    options: SearchOptions = {},
  ): Promise<SearchResult<T>> {
    assertResourceType(resourceType);
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params))
      for (const v of Array.isArray(value) ? value : [value]) query.append(key, v);
    let url: string | undefined = `${this.baseUrl}/${resourceType}${query.size > 0 ? `?${query}` : ''}`;
    // A long query (hundreds of codes) goes as a form body to `_search`, which every FHIR server takes; later pages
    // follow the server's own `next` links.
    let post = url.length > MAX_GET_URL ? query : undefined;
    if (post) url = `${this.baseUrl}/${resourceType}/_search`;
    const maxPages = options.maxPages ?? 20;
    const result: SearchResult<T> = { resources: [], included: [], pages: 0, truncated: false };
    while (url) {
      if (result.pages >= maxPages) {
        result.truncated = true;
        break;
      }
      const response = await this.exchange(post ? 'POST' : 'GET', url, post, true);
      post = undefined;
      const bundle = (await this.json(response, url)) as Bundle;
      if (bundle.resourceType !== 'Bundle')
        throw new DtrError('UPSTREAM_ERROR', `search ${resourceType} did not return a Bundle`);
      result.pages++;
      for (const entry of bundle.entry ?? []) {
        if (!entry.resource) continue;
        if (
          entry.search?.mode === 'include' ||
          entry.search?.mode === 'outcome' ||
          entry.resource.resourceType !== resourceType
        ) {
          result.included.push(entry.resource);
        } else {
          result.resources.push(entry.resource as T);
        }
      }
      const next = bundle.link?.find((l) => l.relation === 'next')?.url;
      // Never follow (and send a token to) a link that leaves this server.
      url = next && (next.startsWith(`${this.baseUrl}/`) || next.startsWith(`${this.baseUrl}?`)) ? next : undefined;
    }
    return result;
  }

  async create<T extends FhirResource>(resource: T, options: { ifNoneExist?: string } = {}): Promise<T> {
    assertResourceType(resource.resourceType);
    const headers: Record<string, string> = options.ifNoneExist ? { 'if-none-exist': options.ifNoneExist } : {};
    // A conditional create may be retried: the server finds the first one.
    const url = `${this.baseUrl}/${resource.resourceType}`;
    const response = await this.exchange('POST', url, resource, Boolean(options.ifNoneExist), [], headers);
    return (await this.json(response, url)) as T;
  }

  async update<T extends FhirResource>(resource: T, options: { ifMatch?: string } = {}): Promise<T> {
    assertResourceType(resource.resourceType);
    if (!resource.id) throw new DtrError('INVALID_INPUT', 'update needs a resource id');
    assertFhirId(resource.id);
    const headers: Record<string, string> = options.ifMatch ? { 'if-match': options.ifMatch } : {};
    const url = `${this.baseUrl}/${resource.resourceType}/${resource.id}`;
    const response = await this.exchange('PUT', url, resource, true, [], headers);
    return (await this.json(response, url)) as T;
  }

  /** POST an operation; `idempotent` (a read-only operation such as $questionnaire-package) allows retries. */
  async operation<T>(path: string, body: unknown, options: { idempotent?: boolean } = {}): Promise<T> {
    if (!/^[A-Za-z]*\/?\$[a-z][a-z-]*$|^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}\/\$[a-z][a-z-]*$/.test(path)) {
      throw new DtrError('INVALID_INPUT', `${path} is not an operation path`);
    }
    const url = `${this.baseUrl}/${path}`;
    const response = await this.exchange('POST', url, body, options.idempotent ?? false);
    return (await this.json(response, url)) as T;
  }

  private async exchange(
    method: string,
    url: string,
    body: unknown,
    idempotent: boolean,
    acceptedErrors: number[] = [],
    extraHeaders: Record<string, string> = {},
  ): Promise<Response> {
    const attempts = idempotent ? this.retries + 1 : 1;
    let lastError: DtrError | undefined;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const headers: Record<string, string> = { accept: FHIR_JSON, ...extraHeaders };
      const form = body instanceof URLSearchParams;
      if (body !== undefined) headers['content-type'] = form ? 'application/x-www-form-urlencoded' : FHIR_JSON;
      if (this.options.accessToken) headers['authorization'] = `Bearer ${await this.options.accessToken()}`;
      const started = Date.now();
      let response: Response;
      try {
        response = await this.fetchFn(url, {
          method,
          headers,
          ...(body !== undefined ? { body: form ? body.toString() : JSON.stringify(body) } : {}),
          redirect: 'error',
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (cause) {
        this.options.onExchange?.({ method, url: stripQuery(url), status: 'error', ms: Date.now() - started });
        const timedOut = cause instanceof Error && (cause.name === 'TimeoutError' || cause.name === 'AbortError');
        lastError = new DtrError(
          timedOut ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_ERROR',
          `${method} ${hostOf(url)} ${timedOut ? 'timed out' : 'failed'}`,
          {
            cause,
          },
        );
        if (attempt < attempts) await this.pause(attempt);
        continue;
      }
      this.options.onExchange?.({ method, url: stripQuery(url), status: response.status, ms: Date.now() - started });
      if (response.ok || acceptedErrors.includes(response.status)) return response;
      // The upstream's body (an OperationOutcome's diagnostics may quote PHI or tokens) is never read into the error:
      // its status and our own words only, so nothing of it can reach a browser or a log line.
      await response.body?.cancel().catch(() => undefined);
      lastError = new DtrError(
        response.status === 404
          ? 'NOT_FOUND'
          : response.status === 409 || response.status === 412
            ? 'CONFLICT'
            : 'UPSTREAM_ERROR',
        `${method} ${pathOf(url, this.baseUrl)} answered ${response.status}`,
        { details: { status: response.status } },
      );
      if (!RETRYABLE.has(response.status) || attempt >= attempts) break;
      await this.pause(attempt, response.headers.get('retry-after'));
    }
    throw lastError ?? new DtrError('UPSTREAM_ERROR', `${method} failed`);
  }

  private async pause(attempt: number, retryAfter?: string | null): Promise<void> {
    const given = retryAfter && /^\d+$/.test(retryAfter) ? Number(retryAfter) * 1000 : undefined;
    const ms = Math.min(5000, given ?? this.backoffMs * 2 ** (attempt - 1) * (0.5 + Math.random()));
    await new Promise((resolve) => setTimeout(resolve, ms));
  }

  private async json(response: Response, url: string): Promise<unknown> {
    const text = await readCapped(response, this.maxResponseBytes, url);
    try {
      return JSON.parse(text) as unknown;
    } catch (cause) {
      throw new DtrError('UPSTREAM_ERROR', 'the FHIR server answered with something that is not JSON', { cause });
    }
  }
}

function stripQuery(url: string): string {
  return url.split('?')[0]!;
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'server';
  }
}

function pathOf(url: string, base: string): string {
  return stripQuery(url).slice(base.length) || '/';
}

const megabytes = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(bytes < 1024 * 1024 ? 2 : 0)} MB`;

/**
 * The body as text, failing with a clear error (and the transfer cancelled) once it passes `max` bytes, whether the
 * server declared its length or streams without one.
 */
/**
 * A response body as text, refused (UPSTREAM_ERROR naming the limit) past `max` bytes, declared or counted: an
 * upstream never makes us hold more than that.
 */
export async function readCapped(response: Response, max: number, url: string): Promise<string> {
  const tooLarge = (size: string) =>
    new DtrError(
      'UPSTREAM_ERROR',
      `${hostOf(url)} answered ${pathOf(url, new URL(url).origin)} with ${size}, more than the ${megabytes(max)} accepted in one response`,
      {
        details: { maxResponseBytes: max },
      },
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
