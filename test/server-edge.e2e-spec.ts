import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type RunningServer, type SpawnedServer, startServer } from './support/processes.js';

/** The running server (the built dist/, as `npm start` runs it) on a database of its own. */
describe('dtr-server HTTP edge', () => {
  let running: RunningServer;
  let server: SpawnedServer;
  let url: string;

  beforeAll(async () => {
    running = await startServer(inject('adminDatabaseUrl'), 'dtr_edge', { DTR_LOG_LEVEL: 'debug' });
    ({ server, url } = running);
  });

  afterAll(() => running?.stop());

  async function expectOutcome(response: Response, status: number, code: string): Promise<void> {
    expect(response.status).toBe(status);
    expect(response.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
    const body = (await response.json()) as { resourceType: string; issue: Array<{ code: string; severity: string }> };
    expect(body.resourceType).toBe('OperationOutcome');
    expect(body.issue[0]).toMatchObject({ severity: 'error', code });
  }

  async function expectStillServing(): Promise<void> {
    const ready = await fetch(`${url}/health/ready`);
    expect(ready.status).toBe(200);
  }

  it('is ready, with the database checked', async () => {
    const response = await fetch(`${url}/health/ready`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: 'ok', details: { database: { status: 'up' } } });
    expect((await fetch(`${url}/health/live`)).status).toBe(200);
  });

  it('refuses a 20 MB body with 413 and keeps serving', async () => {
    const big = JSON.stringify({ resourceType: 'Basic', text: 'x'.repeat(20 * 1024 * 1024) });
    const response = await fetch(`${url}/health/live`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: big,
    });
    await expectOutcome(response, 413, 'too-costly');
    await expectStillServing();
  });

  it('refuses a 20 MB chunked body (no Content-Length) with 413', async () => {
    const chunk = new TextEncoder().encode('x'.repeat(1024 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 20) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const response = await fetch(`${url}/health/live`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    await expectOutcome(response, 413, 'too-costly');
    await expectStillServing();
  });

  it('refuses JSON nested 10,000 deep with 400 and keeps serving', async () => {
    const response = await fetch(`${url}/health/live`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: '['.repeat(10_000) + ']'.repeat(10_000),
    });
    await expectOutcome(response, 400, 'invalid');
    await expectStillServing();
  });

  it('refuses a __proto__ key with 400 and keeps serving', async () => {
    const response = await fetch(`${url}/health/live`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"resourceType":"Parameters","parameter":[{"name":"a","__proto__":{"admin":true}}]}',
    });
    await expectOutcome(response, 400, 'invalid');
    await expectStillServing();
  });

  it('refuses NUL characters, invalid UTF-8 and unsupported media types', async () => {
    await expectOutcome(
      await fetch(`${url}/health/live`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"a":"\\u0000"}',
      }),
      400,
      'invalid',
    );
    await expectOutcome(
      await fetch(`${url}/health/live`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
      }),
      400,
      'invalid',
    );
    await expectOutcome(
      await fetch(`${url}/health/live`, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: '<a/>' }),
      415,
      'not-supported',
    );
  });

  it('refuses a URL with a NUL, another control character or a broken percent-encoding, before any route', async () => {
    // These reached the database (which cannot store a NUL) as a tenant or registration id and answered 500.
    for (const target of [
      '/launch/standalone?tenant=a%00b',
      '/launch?iss=https%3A%2F%2Fehr.example%2Ffhir%01&launch=x',
      '/admin/tenants/%00',
      '/app/questionnaires/%ZZ',
      '/api/session/questionnaire-responses/%ED%A0%80',
    ])
      await expectOutcome(await fetch(`${url}${target}`, { redirect: 'manual' }), 400, 'invalid');
    expect((await fetch(`${url}/launch/standalone?tenant=no-such-tenant`, { redirect: 'manual' })).status).not.toBe(
      400,
    );
    await expectStillServing();
  });

  it('answers unknown routes with a 404 OperationOutcome', async () => {
    await expectOutcome(await fetch(`${url}/no/such/route`), 404, 'not-found');
  });

  it('echoes a well-formed request id, makes one up otherwise, and logs every line of the request with it', async () => {
    const given = 'test-request-0001';
    const response = await fetch(`${url}/no/such/thing?code=SECRETCODE&state=SECRETSTATE`, {
      headers: { 'x-request-id': given },
    });
    expect(response.headers.get('x-request-id')).toBe(given);
    const made = await fetch(`${url}/health/live`, { headers: { 'x-request-id': 'bad id with spaces' } });
    expect(made.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

    await new Promise((resolve) => setTimeout(resolve, 200));
    const lines = server
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const mine = lines.filter((line) => line['requestId'] === given);
    expect(mine.map((line) => line['msg'])).toEqual(expect.arrayContaining(['request refused', 'request']));
    expect(mine.find((line) => line['msg'] === 'request')).toMatchObject({ status: 404, path: '/no/such/thing' });
    // The query string (codes, state) never reaches the log.
    expect(server.output()).not.toContain('SECRETCODE');
    expect(server.output()).not.toContain('SECRETSTATE');
  });

  it('sends security headers', async () => {
    const response = await fetch(`${url}/health/live`);
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('content-security-policy')).toContain("default-src 'self'");
    // Nobody frames our pages unless a tenant lists its EHR's origins (test/embedded-app.e2e-spec.ts).
    expect(response.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(response.headers.get('x-frame-options')).toBe('DENY');
    expect(response.headers.get('x-powered-by')).toBeNull();
  });

  it('documents every route in the OpenAPI document served at /docs', async () => {
    const page = await fetch(`${url}/docs`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('swagger');
    const document = (await (await fetch(`${url}/docs-json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(document.paths)).toEqual(expect.arrayContaining(['/health/live', '/health/ready']));
  });
});
