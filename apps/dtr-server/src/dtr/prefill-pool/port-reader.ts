import type { FhirResource } from '@dtr/fhir';
import { CodeInUnsupportedError, PatientDataReader } from '@dtr/prefill';
import type { MessagePort } from 'node:worker_threads';
import type { DataReply, DataRequest } from './prefill-protocol.js';

/**
 * The reader a prefill worker gives its engine: each read or search becomes a message naming the resource type and
 * the id or search parameters, answered by the main thread, where the EHR client (and its token) lives.
 */
export class PortReader extends PatientDataReader {
  private next = 0;
  private readonly pending = new Map<
    number,
    { resolve: (resources: FhirResource[]) => void; reject: (error: Error) => void }
  >();

  constructor(private readonly port: MessagePort) {
    super();
    port.on('message', (reply: DataReply) => {
      const waiting = this.pending.get(reply.id);
      if (!waiting) return;
      this.pending.delete(reply.id);
      if (reply.ok) waiting.resolve(reply.resources);
      else
        waiting.reject(
          reply.reason === 'code-in-unsupported' ? new CodeInUnsupportedError(reply.message) : new Error(reply.message),
        );
    });
  }

  async read(resourceType: string, id: string): Promise<FhirResource | undefined> {
    const [found] = await this.ask({ type: 'read', id: this.next++, resourceType, resourceId: id });
    return found;
  }

  search(resourceType: string, params: Record<string, string>): Promise<FhirResource[]> {
    return this.ask({ type: 'search', id: this.next++, resourceType, params: { ...params } });
  }

  /** Fails whatever is still waiting (the job ended) and closes the port. */
  close(): void {
    for (const waiting of this.pending.values()) waiting.reject(new Error('the prefill job ended'));
    this.pending.clear();
    this.port.close();
  }

  private ask(request: DataRequest): Promise<FhirResource[]> {
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject });
      this.port.postMessage(request);
    });
  }
}
