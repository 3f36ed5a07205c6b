import { MessageChannel } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { CodeInUnsupportedError } from '@dtr/prefill';
import { ChannelReader } from './channel-reader.js';
import { type DataReply, dataRequest } from './prefill-protocol.js';

/** The worker's side of the data channel (a MessageChannel stands in for the IPC channel): what it sends, and what it makes of the answers. */
describe('ChannelReader', () => {
  it('asks only for a resource type with an id or with search parameters, and resolves with the answers', async () => {
    const { port1: worker, port2: main } = new MessageChannel();
    const asked: unknown[] = [];
    main.on('message', (request: { id: number; type: string; resourceType: string }) => {
      asked.push(request);
      const reply: DataReply =
        request.type === 'read'
          ? {
              id: request.id,
              ok: true,
              resources: request.resourceType === 'Patient' ? [{ resourceType: 'Patient', id: 'p1' }] : [],
            }
          : { id: request.id, ok: true, resources: [{ resourceType: 'Condition', id: 'c1' }] };
      main.postMessage(reply);
    });
    const reader = new ChannelReader((request) => worker.postMessage(request));
    worker.on('message', (reply: DataReply) => reader.deliver(reply));
    await expect(reader.read('Patient', 'p1')).resolves.toEqual({ resourceType: 'Patient', id: 'p1' });
    await expect(reader.read('Encounter', 'e9')).resolves.toBeUndefined();
    await expect(reader.search('Condition', { patient: 'p1', code: 'http://snomed.info/sct|1' })).resolves.toEqual([
      { resourceType: 'Condition', id: 'c1' },
    ]);
    expect(asked).toEqual([
      { type: 'read', id: 0, resourceType: 'Patient', resourceId: 'p1' },
      { type: 'read', id: 1, resourceType: 'Encounter', resourceId: 'e9' },
      { type: 'search', id: 2, resourceType: 'Condition', params: { patient: 'p1', code: 'http://snomed.info/sct|1' } },
    ]);
    // Each is exactly what the main thread's strict schema accepts.
    for (const request of asked) expect(dataRequest.safeParse(request).success).toBe(true);
    reader.close();
    worker.close();
    main.close();
  });

  it('gives the engine a CodeInUnsupportedError when the EHR refused code:in, so it lists the codes instead', async () => {
    const { port1: worker, port2: main } = new MessageChannel();
    main.on('message', (request: { id: number }) => {
      const reply: DataReply =
        request.id === 0
          ? { id: 0, ok: false, message: 'code:in is not supported by this EHR (400)', reason: 'code-in-unsupported' }
          : { id: request.id, ok: false, message: 'code:in is not supported, said the message only' };
      main.postMessage(reply);
    });
    const reader = new ChannelReader((request) => worker.postMessage(request));
    worker.on('message', (reply: DataReply) => reader.deliver(reply));
    const refused = reader.search('Condition', { patient: 'p1', 'code:in': 'http://example.org/vs' });
    await expect(refused).rejects.toBeInstanceOf(CodeInUnsupportedError);
    // A message that merely says so is not the typed refusal.
    const other = await reader.search('Condition', { patient: 'p1' }).catch((e: unknown) => e);
    expect(other).not.toBeInstanceOf(CodeInUnsupportedError);
    reader.close();
    worker.close();
    main.close();
  });

  it('turns a failed request into an error for the engine, and fails what is pending when the job ends', async () => {
    const { port1: worker, port2: main } = new MessageChannel();
    let first = true;
    main.on('message', (request: { id: number }) => {
      if (first) main.postMessage({ id: request.id, ok: false, message: 'EHR answered 503' } satisfies DataReply);
      first = false;
    });
    const reader = new ChannelReader((request) => worker.postMessage(request));
    worker.on('message', (reply: DataReply) => reader.deliver(reply));
    await expect(reader.search('Condition', { patient: 'p1' })).rejects.toThrow('EHR answered 503');
    const pending = reader.read('Patient', 'p1');
    await new Promise((resolve) => setTimeout(resolve, 20));
    reader.close();
    await expect(pending).rejects.toThrow('the prefill job ended');
    worker.close();
    main.close();
  });

  it('the main thread refuses anything but those two shapes', () => {
    expect(
      dataRequest.safeParse({
        type: 'read',
        id: 0,
        resourceType: 'Patient',
        resourceId: 'p1',
        authorization: 'Bearer x',
      }).success,
    ).toBe(false);
    expect(
      dataRequest.safeParse({ type: 'read', id: 0, resourceType: 'Patient', resourceId: '../admin' }).success,
    ).toBe(false);
    expect(dataRequest.safeParse({ type: 'fetch', id: 0, url: 'http://elsewhere.example/' }).success).toBe(false);
    expect(dataRequest.safeParse({ type: 'search', id: 0, resourceType: 'patient', params: {} }).success).toBe(false);
  });
});
