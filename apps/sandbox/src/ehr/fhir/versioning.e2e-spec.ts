import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PeerServer, startPeerServer } from '../../shared/peer-server.js';
import type { AccessTokenInfo } from '../../shared/tokens.js';
import { createEhrFhirServer, type EhrFhirServer } from './index.js';

/**
 * The sandbox EHR's QuestionnaireResponse storage as a DTR app uses it: create, versioned update with If-Match (412 on
 * a stale version), ETag, _history, the resume search, the supplement scopes, and the test-only store listing.
 */
describe('sandbox EHR: versioned QuestionnaireResponse storage over HTTP', () => {
  let peer: PeerServer;
  let fhir: EhrFhirServer;
  const far = Math.floor(Date.now() / 1000) + 3600;

  beforeAll(async () => {
    peer = await startPeerServer('ehr', '127.0.0.1', 0);
    const base = `${peer.origin}/fhir`;
    const tokens = new Map<string, AccessTokenInfo>([
      [
        'supplement',
        {
          clientId: 'dtr-supplement',
          scopes: ['patient/*.rs', 'user/QuestionnaireResponse.cu'],
          patient: 'p1',
          audience: base,
          expiresAt: far,
        },
      ],
      ['read-only', { clientId: 'reader', scopes: ['patient/*.rs'], patient: 'p1', audience: base, expiresAt: far }],
      // The launch identity granted DocumentReference writes anyway (a misconfigured EHR registration).
      [
        'supplement-overgranted',
        {
          clientId: 'dtr-supplement',
          scopes: ['user/DocumentReference.c', 'user/Provenance.c'],
          audience: base,
          expiresAt: far,
        },
      ],
      [
        'disclose',
        {
          clientId: 'dtr-disclose',
          scopes: ['user/DocumentReference.cr', 'user/Provenance.c', 'user/Provenance.rs'],
          audience: base,
          expiresAt: far,
        },
      ],
    ]);
    fhir = await createEhrFhirServer({
      peer,
      introspect: async (t) => tokens.get(t),
      resources: [{ resourceType: 'Patient', id: 'p1' }],
      discloseClients: ['dtr-disclose'],
    });
  });
  afterAll(async () => {
    await peer?.close();
  });

  const send = (method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(`${fhir.baseUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body ? { 'content-type': 'application/fhir+json' } : {}),
        ...headers,
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
  const qr = { resourceType: 'QuestionnaireResponse', status: 'in-progress', subject: { reference: 'Patient/p1' } };

  it('creates, updates with If-Match, refuses a stale version with 412 and keeps every version', async () => {
    const created = await send('POST', '/QuestionnaireResponse', 'supplement', qr);
    expect(created.status).toBe(201);
    expect(created.headers.get('etag')).toBe('W/"1"');
    const first = (await created.json()) as { id: string; meta: { versionId: string } };
    expect(first.meta.versionId).toBe('1');

    const updated = await send(
      'PUT',
      `/QuestionnaireResponse/${first.id}`,
      'supplement',
      { ...qr, id: first.id, status: 'completed' },
      { 'if-match': 'W/"1"' },
    );
    expect(updated.status).toBe(200);
    expect(updated.headers.get('etag')).toBe('W/"2"');

    const stale = await send(
      'PUT',
      `/QuestionnaireResponse/${first.id}`,
      'supplement',
      { ...qr, id: first.id, status: 'amended' },
      { 'if-match': 'W/"1"' },
    );
    expect(stale.status).toBe(412);
    expect(JSON.stringify(await stale.json())).toContain('current version is 2');

    const read = await send('GET', `/QuestionnaireResponse/${first.id}`, 'supplement');
    expect(read.headers.get('etag')).toBe('W/"2"');
    expect(((await read.json()) as { status: string }).status).toBe('completed');
    const history = (await (await send('GET', `/QuestionnaireResponse/${first.id}/_history`, 'supplement')).json()) as {
      total: number;
    };
    expect(history.total).toBe(2);
  });

  it('finds in-progress responses by subject and status, and refuses writes without a write scope', async () => {
    const created = (await (await send('POST', '/QuestionnaireResponse', 'supplement', qr)).json()) as { id: string };
    const found = (await (
      await send('GET', '/QuestionnaireResponse?subject=Patient/p1&status=in-progress', 'supplement')
    ).json()) as { entry?: Array<{ resource: { id: string } }> };
    expect(found.entry?.map((e) => e.resource.id)).toContain(created.id);
    expect((await send('POST', '/QuestionnaireResponse', 'read-only', qr)).status).toBe(403);
  });

  it('takes payer-bound copies only from the disclosure client, once per identifier, with their Provenance', async () => {
    const doc = {
      resourceType: 'DocumentReference',
      identifier: [{ system: 'urn:dtr-backend:submission', value: 's-1' }],
      status: 'current',
      subject: { reference: 'Patient/p1' },
      content: [{ attachment: { contentType: 'application/fhir+json', data: 'e30=' } }],
    };
    const refused = await send('POST', '/DocumentReference', 'supplement-overgranted', doc);
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain('written only by a disclosure client');
    expect((await send('POST', '/Provenance', 'supplement-overgranted', { resourceType: 'Provenance' })).status).toBe(
      403,
    );
    const ifNoneExist = { 'if-none-exist': 'identifier=urn:dtr-backend:submission|s-1' };
    const first = await send('POST', '/DocumentReference', 'disclose', doc, ifNoneExist);
    expect(first.status).toBe(201);
    const again = await send('POST', '/DocumentReference', 'disclose', doc, ifNoneExist);
    expect(again.status).toBe(200);
    const id = ((await first.json()) as { id: string }).id;
    expect(((await again.json()) as { id: string }).id).toBe(id);
    const provenance = { resourceType: 'Provenance', target: [{ reference: `DocumentReference/${id}` }] };
    const target = { 'if-none-exist': `target=DocumentReference/${id}` };
    expect((await send('POST', '/Provenance', 'disclose', provenance, target)).status).toBe(201);
    expect((await send('POST', '/Provenance', 'disclose', provenance, target)).status).toBe(200);
    const found = (await (await send('GET', `/Provenance?target=DocumentReference/${id}`, 'disclose')).json()) as {
      entry?: unknown[];
    };
    expect(found.entry).toHaveLength(1);
  });

  it('lists what it holds at /_sandbox/store/{type} and lets a test store a version as another user', async () => {
    const created = (await (await send('POST', '/QuestionnaireResponse', 'supplement', qr)).json()) as { id: string };
    const changed = await fetch(`${peer.origin}/_sandbox/store/QuestionnaireResponse/${created.id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...qr, id: created.id, status: 'stopped' }),
    });
    expect(changed.status).toBe(200);
    const listing = (await (await fetch(`${peer.origin}/_sandbox/store/QuestionnaireResponse`)).json()) as {
      entry: Array<{ resource: { id: string; status: string; meta: { versionId: string } } }>;
    };
    expect(listing.entry.find((e) => e.resource.id === created.id)?.resource).toMatchObject({
      status: 'stopped',
      meta: { versionId: '2' },
    });
    expect((await fetch(`${peer.origin}/_sandbox/store/not-a-type`)).status).toBe(400);
  });
});
