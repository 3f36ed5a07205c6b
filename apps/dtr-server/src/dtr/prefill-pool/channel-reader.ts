import type { FhirResource } from '@dtr/fhir';
import { CodeInUnsupportedError, PatientDataReader } from '@dtr/prefill';
import type { DataReply, DataRequest } from './prefill-protocol.js';

/**
 * The reader a prefill worker gives its engine: each read or search becomes a message naming the resource type and
 * the id or search parameters (`send`, over the worker's channel to the server), answered by the server, where the
 * EHR client (and its token) lives; the answers come back through `deliver`.
 */
export class ChannelReader extends PatientDataReader {
  private next = 0;
  private closed = false;
  private readonly pending = new Map<
    number,
    { resolve: (resources: FhirResource[]) => void; reject: (error: Error) => void }
  >();

  constructor(private readonly send: (request: DataRequest) => void) {
    super();
  }

  /** One answer from the server. */
  deliver(reply: DataReply): void {
    const waiting = this.pending.get(reply.id);
    if (!waiting) return;
    this.pending.delete(reply.id);
    if (reply.ok) waiting.resolve(reply.resources);
    else
      waiting.reject(
        reply.reason === 'code-in-unsupported' ? new CodeInUnsupportedError(reply.message) : new Error(reply.message),
      );
  }

  async read(resourceType: string, id: string): Promise<FhirResource | undefined> {
    const [found] = await this.ask({ type: 'read', id: this.next++, resourceType, resourceId: id });
    return found;
  }

  search(resourceType: string, params: Record<string, string>): Promise<FhirResource[]> {
    return this.ask({ type: 'search', id: this.next++, resourceType, params: { ...params } });
  }

  /** Fails whatever is still waiting (the job ended); later questions fail at once. */
  close(): void {
    this.closed = true;
    for (const waiting of this.pending.values()) waiting.reject(new Error('the prefill job ended'));
    this.pending.clear();
  }

  private ask(request: DataRequest): Promise<FhirResource[]> {
    if (this.closed) return Promise.reject(new Error('the prefill job ended'));
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject });
      this.send(request);
    });
  }
}
