import { HttpFhirClient } from '@dtr/fhir';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PeerServer, startPeerServer } from '../../shared/peer-server.js';
import { createEhrFhirServer, type EhrFhirServer } from './index.js';

/** Long searches as a DTR client sends them: a form POST to `_search`, paged with opaque next links. */
describe('sandbox EHR: POST _search and paging', () => {
  let peer: PeerServer;
  let fhir: EhrFhirServer;

  beforeAll(async () => {
    peer = await startPeerServer('ehr', '127.0.0.1', 0);
    const base = `${peer.origin}/fhir`;
    fhir = await createEhrFhirServer({
      peer,
      introspect: async (token) =>
        token === 'reader'
          ? { clientId: 'r', scopes: ['patient/*.rs'], patient: 'p1', audience: base, expiresAt: 2e9 }
          : undefined,
      resources: [
        { resourceType: 'Patient', id: 'p1' },
        ...Array.from({ length: 120 }, (_, i) => ({
          resourceType: 'Observation',
          id: `o${i + 1}`,
          status: 'final',
          subject: { reference: 'Patient/p1' },
          code: { coding: [{ system: 'http://example.org/codes', code: `c${i + 1}` }] },
        })),
      ],
    });
  });
  afterAll(async () => {
    await peer?.close();
  });

  it('answers a 400-code search sent as a form POST, all pages through opaque next links', async () => {
    const exchanges: string[] = [];
    const client = new HttpFhirClient({
      baseUrl: fhir.baseUrl,
      accessToken: async () => 'reader',
      onExchange: (e) => exchanges.push(`${e.method} ${e.url.replace(fhir.baseUrl, '')}`),
    });
    const codes = Array.from({ length: 400 }, (_, i) => `http://example.org/codes|c${i + 1}`).join(',');
    const result = await client.search('Observation', { patient: 'p1', code: codes });
    expect(result.resources.map((r) => r.id).sort()).toEqual(Array.from({ length: 120 }, (_, i) => `o${i + 1}`).sort());
    expect(result.pages).toBe(3);
    expect(exchanges).toEqual(['POST /Observation/_search', 'GET /Observation', 'GET /Observation']);
    // The next links carry a page id, not the kilobytes of codes.
    const log = peer.log.all().filter((e) => e.path.endsWith('/Observation'));
    expect(log.every((e) => JSON.stringify(e.query).length < 200)).toBe(true);
  });
});
