import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createEhrFhirServer, type EhrFhirServer } from '../ehr/fhir/index.js';
import { type PeerServer, startPeerServer } from './peer-server.js';

/** Fault injection, switched at run time over HTTP as a test would, observed by a client. */
describe('sandbox fault injection', () => {
  let peer: PeerServer;
  let fhir: EhrFhirServer;
  const far = Math.floor(Date.now() / 1000) + 3600;

  beforeAll(async () => {
    peer = await startPeerServer('ehr', '127.0.0.1', 0);
    fhir = await createEhrFhirServer({
      peer,
      introspect: async (t) =>
        t === 'w'
          ? { clientId: 'c', scopes: ['user/*.cruds'], audience: `${peer.origin}/fhir`, expiresAt: far }
          : undefined,
      resources: [{ resourceType: 'Patient', id: 'p1' }],
    });
  });
  afterAll(async () => {
    await peer?.close();
  });
  // A failed assertion never leaves a fault switched on for the next test.
  afterEach(() => peer.faults.clear());

  const setFaults = (faults: Record<string, unknown>) =>
    fetch(`${peer.origin}/_sandbox/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(faults),
    });
  const read = () => fetch(`${fhir.baseUrl}/Patient/p1`, { headers: { authorization: 'Bearer w' } });

  it('adds latency', async () => {
    await setFaults({ latencyMs: 300 });
    const started = Date.now();
    expect((await read()).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await setFaults({});
  });

  it('answers 429 with Retry-After at the given rate, then recovers', async () => {
    await setFaults({ errorRate: 1, errorStatus: 429 });
    const refused = await read();
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    await setFaults({});
    expect((await read()).status).toBe(200);
  });

  it('drops the response after committing the write', async () => {
    await setFaults({ dropResponseAfterCommit: true });
    const before = fhir.store.all('Observation').length;
    await expect(
      fetch(`${fhir.baseUrl}/Observation`, {
        method: 'POST',
        headers: { authorization: 'Bearer w', 'content-type': 'application/fhir+json' },
        body: JSON.stringify({
          resourceType: 'Observation',
          status: 'final',
          subject: { reference: 'Patient/p1' },
          code: { text: 'x' },
        }),
      }),
    ).rejects.toThrow();
    expect(fhir.store.all('Observation').length).toBe(before + 1);
    await setFaults({});
  });

  it('refuses connections until switched back, on the same port', async () => {
    await setFaults({ refuseConnections: true });
    await expect(read()).rejects.toThrow();
    peer.faults.clear();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await read()).status).toBe(200);
  });
});
