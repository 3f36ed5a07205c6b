import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PeerServer, startPeerServer } from '../../shared/peer-server.js';
import { fingerprint } from '../../shared/request-log.js';
import type { AccessTokenInfo } from '../../shared/tokens.js';
import { createEhrFhirServer, type EhrFhirServer } from './index.js';

const obs = (id: string, patient: string, code: string, date: string, status = 'final') => ({
  resourceType: 'Observation',
  id,
  status,
  subject: { reference: `Patient/${patient}` },
  category: [
    { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] },
  ],
  code: { coding: [{ system: 'http://loinc.org', code }] },
  effectiveDateTime: date,
});

describe('sandbox EHR FHIR server over HTTP', () => {
  let peer: PeerServer;
  let fhir: EhrFhirServer;
  const tokens = new Map<string, AccessTokenInfo>();
  const far = Math.floor(Date.now() / 1000) + 3600;

  beforeAll(async () => {
    peer = await startPeerServer('ehr', '127.0.0.1', 0);
    const base = `${peer.origin}/fhir`;
    tokens.set('t-patient-read', {
      clientId: 'app',
      scopes: ['patient/*.rs'],
      patient: 'p1',
      audience: base,
      expiresAt: far,
    });
    tokens.set('t-patient-write', {
      clientId: 'app',
      scopes: ['patient/*.cruds'],
      patient: 'p1',
      audience: base,
      expiresAt: far,
    });
    tokens.set('t-user-all', { clientId: 'app-disclose', scopes: ['user/*.cruds'], audience: base, expiresAt: far });
    tokens.set('t-v1', {
      clientId: 'app',
      scopes: ['patient/Observation.read'],
      patient: 'p1',
      audience: base,
      expiresAt: far,
    });
    tokens.set('t-elsewhere', {
      clientId: 'app',
      scopes: ['user/*.rs'],
      audience: 'https://other.example.org/fhir',
      expiresAt: far,
    });
    fhir = await createEhrFhirServer({
      peer,
      introspect: async (t) => tokens.get(t),
      resources: [
        { resourceType: 'Patient', id: 'p1', name: [{ given: ['Ann'], family: 'Lee' }] },
        { resourceType: 'Patient', id: 'p2', name: [{ given: ['Bo'], family: 'Ng' }] },
        obs('o1', 'p1', '2708-6', '2025-01-10'),
        obs('o2', 'p1', '2708-6', '2026-03-01'),
        obs('o3', 'p1', '8867-4', '2026-03-02'),
        obs('o4', 'p1', '2708-6', '2026-04-01', 'entered-in-error'),
        obs('o9', 'p2', '2708-6', '2026-03-01'),
      ],
    });
  });
  afterAll(async () => {
    await peer?.close();
  });

  const get = (path: string, token?: string) =>
    fetch(`${fhir.baseUrl}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const ids = async (response: Response) =>
    ((await response.json()) as { entry?: Array<{ resource: { id: string } }> }).entry?.map((e) => e.resource.id) ?? [];

  it('searches by patient, code, status, category and date', async () => {
    expect(
      await ids(await get('/Observation?patient=p1&code=http://loinc.org|2708-6&status=final', 't-patient-read')),
    ).toEqual(['o1', 'o2']);
    expect(
      await ids(await get('/Observation?patient=Patient/p1&date=ge2026-01-01&status=final', 't-patient-read')),
    ).toEqual(['o2', 'o3']);
    expect(await ids(await get('/Observation?patient=p1&category=vital-signs&code=8867-4', 't-patient-read'))).toEqual([
      'o3',
    ]);
    expect(await ids(await get('/Observation?_id=o2,o3', 't-patient-read'))).toEqual(['o2', 'o3']);
  });

  it('pages with _count and absolute next links that work when followed', async () => {
    const first = (await (await get('/Observation?patient=p1&_count=2', 't-patient-read')).json()) as {
      total: number;
      link: Array<{ relation: string; url: string }>;
      entry: unknown[];
    };
    expect(first.total).toBe(4);
    expect(first.entry).toHaveLength(2);
    const next = first.link.find((l) => l.relation === 'next')!.url;
    expect(next.startsWith(fhir.baseUrl)).toBe(true);
    const second = (await (await fetch(next, { headers: { authorization: 'Bearer t-patient-read' } })).json()) as {
      entry: unknown[];
      link: Array<{ relation: string }>;
    };
    expect(second.entry).toHaveLength(2);
    expect(second.link.some((l) => l.relation === 'next')).toBe(false);
  });

  it('refuses: no token 401, unknown token 401, another audience 401, unsupported parameter 400', async () => {
    const none = await get('/Patient/p1');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect((await get('/Patient/p1', 'nope')).status).toBe(401);
    expect((await get('/Patient/p1', 't-elsewhere')).status).toBe(401);
    expect((await get('/Observation?patient=p1&value-quantity=gt5', 't-patient-read')).status).toBe(400);
  });

  it('refuses every search modifier it does not implement, instead of answering another search', async () => {
    for (const query of [
      'code:not=2708-6',
      'status:missing=true',
      'code:in=http://example.org/ValueSet/oxygen',
      'patient:Patient=p1',
      'code:text=oxygen',
    ]) {
      const response = await get(`/Observation?patient=p1&${query}`, 't-user-all');
      expect(response.status, query).toBe(400);
      const body = (await response.json()) as { issue: Array<{ code: string; diagnostics: string }> };
      expect(body.issue[0]).toMatchObject({ code: 'not-supported' });
      expect(body.issue[0]!.diagnostics).toContain(query.split('=')[0]!.split(':')[1]!);
    }
  });

  it('keeps a patient-level token in its patient compartment', async () => {
    expect((await get('/Patient/p2', 't-patient-read')).status).toBe(403);
    expect((await get('/Observation/o9', 't-patient-read')).status).toBe(403);
    // A search without a patient parameter only returns the token patient's resources.
    expect(await ids(await get('/Observation?code=2708-6&status=final', 't-patient-read'))).toEqual(['o1', 'o2']);
    expect(await ids(await get('/Observation?code=2708-6&status=final', 't-user-all'))).toEqual(['o1', 'o2', 'o9']);
    expect((await get('/Observation/o1', 't-v1')).status).toBe(200);
  });

  it('refuses a write with a read-only token, and accepts create, update, conditional create', async () => {
    const qr = {
      resourceType: 'QuestionnaireResponse',
      status: 'in-progress',
      subject: { reference: 'Patient/p1' },
      identifier: { system: 'urn:dtr', value: 'qr-1' },
    };
    const post = (token: string, headers: Record<string, string> = {}) =>
      fetch(`${fhir.baseUrl}/QuestionnaireResponse`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json', ...headers },
        body: JSON.stringify(qr),
      });
    expect((await post('t-patient-read')).status).toBe(403);
    const created = await post('t-user-all', { 'if-none-exist': 'identifier=urn:dtr|qr-1' });
    expect(created.status).toBe(201);
    const body = (await created.json()) as { id: string; meta: { versionId: string } };
    const again = await post('t-user-all', { 'if-none-exist': 'identifier=urn:dtr|qr-1' });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { id: string }).id).toBe(body.id);
    const put = await fetch(`${fhir.baseUrl}/QuestionnaireResponse/${body.id}`, {
      method: 'PUT',
      headers: { authorization: 'Bearer t-user-all', 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ ...qr, id: body.id, status: 'completed' }),
    });
    expect(put.status).toBe(200);
    const history = (await (await get(`/QuestionnaireResponse/${body.id}/_history`, 't-user-all')).json()) as {
      entry: Array<{ resource: { status: string } }>;
    };
    expect(history.entry.map((e) => e.resource.status)).toEqual(['completed', 'in-progress']);
    expect(fhir.store.search('QuestionnaireResponse', { identifier: 'urn:dtr|qr-1' })).toHaveLength(1);
  });

  it('runs a transaction all or nothing', async () => {
    const transaction = (subject: string) => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: {
            resourceType: 'Observation',
            status: 'final',
            subject: { reference: 'Patient/p1' },
            code: { text: 'a' },
          },
          request: { method: 'POST', url: 'Observation' },
        },
        {
          resource: {
            resourceType: 'Observation',
            status: 'final',
            subject: { reference: subject },
            code: { text: 'b' },
          },
          request: { method: 'POST', url: 'Observation' },
        },
      ],
    });
    const before = fhir.store.all('Observation').length;
    const ok = await fetch(fhir.baseUrl, {
      method: 'POST',
      headers: { authorization: 'Bearer t-user-all', 'content-type': 'application/fhir+json' },
      body: JSON.stringify(transaction('Patient/p1')),
    });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { entry: unknown[] }).entry).toHaveLength(2);
    expect(fhir.store.all('Observation').length).toBe(before + 2);

    // The second entry is outside the token's patient compartment: refused, and the first entry is not kept.
    const refused = await fetch(fhir.baseUrl, {
      method: 'POST',
      headers: { authorization: 'Bearer t-patient-write', 'content-type': 'application/fhir+json' },
      body: JSON.stringify(transaction('Patient/p2')),
    });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
    expect(fhir.store.all('Observation').length).toBe(before + 2);
    expect(fhir.store.all('Observation').filter((o) => (o['code'] as { text?: string })?.text === 'a')).toHaveLength(1);
  });

  it('records each request with client, scopes and token fingerprint (never the token)', async () => {
    const mark = peer.log.mark();
    await get('/Patient/p1', 't-patient-read');
    const [entry] = peer.log.since(mark);
    expect(entry).toMatchObject({
      method: 'GET',
      path: '/fhir/Patient/p1',
      clientId: 'app',
      scopes: ['patient/*.rs'],
      tokenFingerprint: fingerprint('t-patient-read'),
      status: 200,
    });
    expect(JSON.stringify(peer.log.all())).not.toContain('t-patient-read');
    expect(fhir.listPatients()).toEqual([
      { id: 'p1', display: 'Ann Lee' },
      { id: 'p2', display: 'Bo Ng' },
    ]);
  });
});
