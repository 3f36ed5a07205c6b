import { describe, expect, it } from 'vitest';
import { HttpFhirClient } from './http-fhir-client.js';

const BASE = 'https://ehr.example.org/fhir';

interface Call {
  method: string;
  url: string;
  authorization: string | null;
}

function server(handler: (call: Call, n: number) => Response | Promise<Response>) {
  const calls: Call[] = [];
  const fn = (async (input: string | URL | Request, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    const call = { method: init?.method ?? 'GET', url: String(input), authorization: headers.get('authorization') };
    calls.push(call);
    return handler(call, calls.length);
  }) as typeof fetch;
  return { fn, calls };
}

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/fhir+json', ...headers } });

const page = (ids: string[], next?: string) => ({
  resourceType: 'Bundle',
  type: 'searchset',
  entry: ids.map((id) => ({ resource: { resourceType: 'Observation', id }, search: { mode: 'match' } })),
  ...(next ? { link: [{ relation: 'next', url: next }] } : {}),
});

describe('HttpFhirClient', () => {
  it('follows next links on its own base and sends the current token each time', async () => {
    let token = 0;
    const { fn, calls } = server((call) =>
      call.url.includes('page=2') ? json(page(['c'])) : json(page(['a', 'b'], `${BASE}/Observation?page=2`)),
    );
    const client = new HttpFhirClient({ baseUrl: `${BASE}/`, fetch: fn, accessToken: async () => `t${++token}` });
    const result = await client.search('Observation', { patient: 'p1', code: ['http://loinc.org|2708-6', 'x'] });
    expect(result.resources.map((r) => r.id)).toEqual(['a', 'b', 'c']);
    expect(result.pages).toBe(2);
    expect(calls[0]!.url).toBe(`${BASE}/Observation?patient=p1&code=http%3A%2F%2Floinc.org%7C2708-6&code=x`);
    expect(calls.map((c) => c.authorization)).toEqual(['Bearer t1', 'Bearer t2']);
  });

  it('sends a long search (hundreds of codes) as a form POST to _search, then follows next links with GET', async () => {
    const bodies: string[] = [];
    const { fn, calls } = server((call) =>
      call.url.includes('_page=') ? json(page(['c'])) : json(page(['a', 'b'], `${BASE}/Observation?_page=x&_offset=2`)),
    );
    const spy = (async (input: string | URL | Request, init?: RequestInit) => {
      if (init?.body) bodies.push(`${new Headers(init.headers).get('content-type')} ${String(init.body)}`);
      return fn(input, init);
    }) as typeof fetch;
    const codes = Array.from({ length: 300 }, (_, i) => `http://loinc.org|${10000 + i}-1`);
    const result = await new HttpFhirClient({ baseUrl: BASE, fetch: spy }).search('Observation', {
      patient: 'p1',
      code: codes.join(','),
    });
    expect(result.resources.map((r) => r.id)).toEqual(['a', 'b', 'c']);
    expect(calls.map((c) => `${c.method} ${c.url.replace(BASE, '')}`)).toEqual([
      'POST /Observation/_search',
      'GET /Observation?_page=x&_offset=2',
    ]);
    expect(bodies).toHaveLength(1);
    expect(bodies[0]).toMatch(
      /^application\/x-www-form-urlencoded patient=p1&code=http%3A%2F%2Floinc.org%7C10000-1%2C/,
    );
    // A short search stays a GET.
    await new HttpFhirClient({ baseUrl: BASE, fetch: spy }).search('Observation', { patient: 'p1' });
    expect(calls.at(-1)!.method).toBe('GET');
  });

  it('never follows a next link to another server (the token would go there): the search fails', async () => {
    const { fn, calls } = server(() => json(page(['a'], 'https://evil.example.org/fhir/Observation?page=2')));
    const client = new HttpFhirClient({ baseUrl: BASE, fetch: fn, accessToken: async () => 't' });
    await expect(client.search('Observation')).rejects.toMatchObject({
      code: 'UPSTREAM_ERROR',
      message: expect.stringContaining('next page link leaves the FHIR base'),
    });
    expect(calls).toHaveLength(1);
  });

  it.each([
    `${BASE}/%2e%2e/admin/Observation?page=2`,
    `${BASE}/%2E%2E/%2e%2e/fhir/Observation?page=2`,
    `${BASE}/Observation/%2e%2e%2f..%2fadmin?page=2`,
    `${BASE}/../admin?page=2`,
    `${BASE}x/Observation?page=2`,
    `https://ehr.example.org:8443/fhir/Observation?page=2`,
    `https://user:pw@ehr.example.org/fhir/Observation?page=2`,
  ])('refuses a next link that escapes the base once parsed: %s', async (next) => {
    const { fn, calls } = server(() => json(page(['a'], next)));
    const client = new HttpFhirClient({ baseUrl: BASE, fetch: fn, accessToken: async () => 't' });
    await expect(client.search('Observation')).rejects.toMatchObject({ code: 'UPSTREAM_ERROR' });
    expect(calls).toHaveLength(1);
  });

  it('answers larger than maxResponseBytes fail the call, declared or streamed without a length', async () => {
    const big = JSON.stringify(page(Array.from({ length: 2000 }, (_, i) => `obs-${i}`)));
    const declared = server(() => json(JSON.parse(big)));
    await expect(
      new HttpFhirClient({ baseUrl: BASE, fetch: declared.fn, maxResponseBytes: 10_000 }).search('Observation'),
    ).rejects.toMatchObject({ code: 'UPSTREAM_ERROR', message: expect.stringContaining('accepted in one response') });
    const streamed = server(
      () =>
        new Response(
          new ReadableStream({
            start(controller) {
              for (let i = 0; i < big.length; i += 1000)
                controller.enqueue(new TextEncoder().encode(big.slice(i, i + 1000)));
              controller.close();
            },
          }),
          { headers: { 'content-type': 'application/fhir+json' } },
        ),
    );
    await expect(
      new HttpFhirClient({ baseUrl: BASE, fetch: streamed.fn, maxResponseBytes: 10_000 }).search('Observation'),
    ).rejects.toMatchObject({ code: 'UPSTREAM_ERROR', message: expect.stringContaining('more than') });
  });

  it.each([
    ['a __proto__ key', '{"resourceType":"Patient","id":"p","__proto__":{"admin":true}}', '__proto__'],
    [
      'a constructor key',
      '{"resourceType":"Patient","id":"p","name":[{"constructor":{"prototype":{}}}]}',
      'constructor',
    ],
    ['deep nesting', `{"resourceType":"Patient","id":"p","x":${'['.repeat(500)}${']'.repeat(500)}}`, 'nesting'],
    ['a NUL character', '{"resourceType":"Patient","id":"p","gender":"ma\\u0000le"}', 'NUL'],
    ['text that is not JSON', '<html>gateway</html>', 'not valid JSON'],
  ])('refuses an answer with %s as an upstream error', async (_what, body, reason) => {
    const { fn } = server(() => new Response(body, { headers: { 'content-type': 'application/fhir+json' } }));
    const error = await new HttpFhirClient({ baseUrl: BASE, fetch: fn }).read('Patient', 'p').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'UPSTREAM_ERROR', message: expect.stringContaining(reason) });
    expect(({} as Record<string, unknown>)['admin']).toBeUndefined();
  });

  it('stops at maxPages and says so', async () => {
    const { fn } = server((_c, n) => json(page([`r${n}`], `${BASE}/Observation?page=${n + 1}`)));
    const result = await new HttpFhirClient({ baseUrl: BASE, fetch: fn }).search('Observation', {}, { maxPages: 3 });
    expect(result.resources).toHaveLength(3);
    expect(result.truncated).toBe(true);
  });

  it('retries idempotent reads on 503 and 429 (honouring Retry-After), then succeeds', async () => {
    const { fn, calls } = server((_c, n) =>
      n === 1
        ? json({}, 503)
        : n === 2
          ? json({}, 429, { 'retry-after': '0' })
          : json({ resourceType: 'Patient', id: 'p1' }),
    );
    const client = new HttpFhirClient({ baseUrl: BASE, fetch: fn, backoffMs: 1 });
    expect(await client.read('Patient', 'p1')).toMatchObject({ id: 'p1' });
    expect(calls).toHaveLength(3);
  });

  it('does not retry a plain create, and reports its status, never the upstream text (it may carry PHI)', async () => {
    const outcome = {
      resourceType: 'OperationOutcome',
      issue: [
        { severity: 'error', code: 'transient', diagnostics: 'database busy for patient Jane Roe, SSN 123-45-6789' },
      ],
    };
    const { fn, calls } = server(() => json(outcome, 503));
    const client = new HttpFhirClient({ baseUrl: BASE, fetch: fn, backoffMs: 1 });
    const error = await client.create({ resourceType: 'QuestionnaireResponse' }).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'UPSTREAM_ERROR',
      message: 'POST /QuestionnaireResponse answered 503',
      details: { status: 503 },
    });
    expect(JSON.stringify(error, Object.getOwnPropertyNames(error))).not.toMatch(/Jane|123-45|database busy/);
    expect(calls).toHaveLength(1);
  });

  it('reads a missing resource as undefined and refuses malformed ids before any request', async () => {
    const { fn, calls } = server(() => json({ resourceType: 'OperationOutcome', issue: [] }, 404));
    const client = new HttpFhirClient({ baseUrl: BASE, fetch: fn });
    expect(await client.read('Patient', 'nope')).toBeUndefined();
    await expect(client.read('Patient', '../admin')).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    for (const dots of ['.', '..', '...'])
      await expect(client.read('Patient', dots)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(client.update({ resourceType: 'Patient', id: '..' })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(client.search('patient?x=')).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect(calls).toHaveLength(1);
  });

  it('gives up after the retries with UPSTREAM_TIMEOUT when the server hangs', async () => {
    const hang = ((_i: unknown, init?: RequestInit) =>
      new Promise<Response>((_r, reject) =>
        init?.signal?.addEventListener('abort', () => reject(init.signal!.reason)),
      )) as typeof fetch;
    const client = new HttpFhirClient({ baseUrl: BASE, fetch: hang, timeoutMs: 30, retries: 1, backoffMs: 1 });
    await expect(client.read('Patient', 'p')).rejects.toMatchObject({ code: 'UPSTREAM_TIMEOUT' });
  });

  it('reports each exchange without query string or token', async () => {
    const exchanges: unknown[] = [];
    const { fn } = server(() => json(page([])));
    await new HttpFhirClient({
      baseUrl: BASE,
      fetch: fn,
      accessToken: async () => 'secret-token',
      onExchange: (e) => exchanges.push(e),
    }).search('Condition', { patient: 'p9' });
    expect(exchanges).toEqual([{ method: 'GET', url: `${BASE}/Condition`, status: 200, ms: expect.any(Number) }]);
    expect(JSON.stringify(exchanges)).not.toContain('secret-token');
  });
});
