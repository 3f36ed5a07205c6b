import { DtrError } from '@dtr/kernel';
import { EHR_RESPONSE_LIMITS, readUpstreamJson } from './upstream-body.js';
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
   * The largest response body accepted, in bytes (default 10 MiB: far above a search page). A larger one fails the
   * exchange as soon as the limit is passed, so a faulty server cannot fill memory.
   */
  maxResponseBytes?: number;
  /** Deepest JSON nesting accepted in an answer (default 100); answers are checked as inbound bodies are. */
  maxJsonDepth?: number;
  /** Called once per HTTP exchange (for the audit/minimum-necessary record). Never receives the token. */
  onExchange?: (exchange: { method: string; url: string; status: number | 'error'; ms: number }) => void;
}

const RETRYABLE = new Set([429, 502, 503, 504]);
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
  private readonly maxJsonDepth: number;

  constructor(private readonly options: HttpFhirClientOptions) {
    super();
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.fetchFn = options.fetch ?? fetch;
    this.timeoutMs = options.timeoutMs ?? 15_000;
    this.retries = options.retries ?? 2;
    this.backoffMs = options.backoffMs ?? 200;
    this.maxResponseBytes = options.maxResponseBytes ?? EHR_RESPONSE_LIMITS.maxBytes;
    this.maxJsonDepth = options.maxJsonDepth ?? EHR_RESPONSE_LIMITS.maxDepth;
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
      // Never follow (and send a token to) a link that leaves this server's base.
      if (next !== undefined && !isUnderBase(next, this.baseUrl))
        throw new DtrError('UPSTREAM_ERROR', `search ${resourceType}: the next page link leaves the FHIR base`);
      url = next;
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
    if (
      !/^[A-Za-z]*\/?\$[a-z][a-z-]*$|^[A-Z][A-Za-z]+\/(?!\.+(?:\/|$))[A-Za-z0-9\-.]{1,64}\/\$[a-z][a-z-]*$/.test(path)
    ) {
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
    return readUpstreamJson(response, { maxBytes: this.maxResponseBytes, maxDepth: this.maxJsonDepth }, url);
  }
}

/**
 * Whether a link (a search's `next`) stays on this FHIR base: same origin, and a path under the base's once both are
 * parsed and normalised (`..` and percent-encoded dots or slashes in a path segment do not pass).
 */
function isUnderBase(link: string, baseUrl: string): boolean {
  // A dot segment, plain or percent-encoded, is refused as written (even when it would resolve back under the base).
  if (/(^|\/)(\.|%2e){1,2}(\/|$)/i.test(link.split(/[?#]/)[0]!)) return false;
  let url: URL;
  let base: URL;
  try {
    url = new URL(link);
    base = new URL(baseUrl);
  } catch {
    return false;
  }
  if (url.origin !== base.origin || url.username || url.password) return false;
  // Dots or slashes that a server or proxy may decode into `..` or a separator later.
  if (/%2e|%2f|%5c|\\/i.test(url.pathname)) return false;
  const segments = url.pathname.split('/');
  if (segments.some((s) => s === '.' || s === '..')) return false;
  const basePath = base.pathname.replace(/\/+$/, '');
  return url.pathname === basePath || url.pathname.startsWith(`${basePath}/`);
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
