import { DtrError } from '@dtr/kernel';
import { FhirClient, type FhirResource, type SearchResult } from '@dtr/fhir';
import { describe, expect, it } from 'vitest';
import { contextReferences, EhrResponses } from './ehr-responses.js';

/** An EHR that answers writes with what the test says, and records what it was asked. */
class ScriptedEhr extends FhirClient {
  readonly baseUrl = 'https://ehr.example.org/fhir';
  readonly calls: Array<{ op: string; ifMatch?: string; id?: string }> = [];
  constructor(
    private readonly onWrite: (resource: FhirResource) => FhirResource,
    private readonly current?: FhirResource,
  ) {
    super();
  }
  async read<T extends FhirResource>(): Promise<T | undefined> {
    return this.current as T | undefined;
  }
  async search<T extends FhirResource>(): Promise<SearchResult<T>> {
    return { resources: [], included: [], pages: 1, truncated: false };
  }
  async create<T extends FhirResource>(resource: T): Promise<T> {
    this.calls.push({ op: 'create', ...(resource.id ? { id: resource.id } : {}) });
    return this.onWrite(resource) as T;
  }
  async update<T extends FhirResource>(resource: T, options: { ifMatch?: string } = {}): Promise<T> {
    this.calls.push({ op: 'update', id: resource.id!, ...(options.ifMatch ? { ifMatch: options.ifMatch } : {}) });
    return this.onWrite(resource) as T;
  }
  async operation<T>(): Promise<T> {
    throw new Error('not used');
  }
}

const qr: FhirResource = { resourceType: 'QuestionnaireResponse', status: 'in-progress' };
const now = new Date('2026-12-05T12:00:00Z');

describe('EhrResponses', () => {
  it('creates on the first save and updates with If-Match on the version it holds', async () => {
    const ehr = new ScriptedEhr((r) => ({ ...r, id: r.id ?? 'qr1', meta: { versionId: r.id ? '2' : '1' } }));
    const store = new EhrResponses(ehr);
    const first = await store.save({ ...qr, id: 'from-the-page' }, {}, now);
    expect(first).toMatchObject({ kind: 'saved', id: 'qr1', versionId: '1' });
    const second = await store.save(qr, { id: 'qr1', versionId: '1' }, now);
    expect(second).toMatchObject({ kind: 'saved', id: 'qr1', versionId: '2' });
    // The page's id is never used to create: the EHR assigns it.
    expect(ehr.calls).toEqual([{ op: 'create' }, { op: 'update', id: 'qr1', ifMatch: 'W/"1"' }]);
  });

  it('turns a 412 into a conflict carrying the EHR version', async () => {
    const theirs = { ...qr, id: 'qr1', meta: { versionId: '5' } };
    const ehr = new ScriptedEhr(() => {
      throw new DtrError('CONFLICT', 'PUT answered 412', { details: { status: 412 } });
    }, theirs);
    const result = await new EhrResponses(ehr).save(qr, { id: 'qr1', versionId: '4' }, now);
    expect(result).toMatchObject({ kind: 'conflict', theirs, message: expect.stringMatching(/someone else changed/i) });
  });

  it('says the draft is kept when the EHR is unavailable or refuses', async () => {
    const failing = (status: number) =>
      new ScriptedEhr(() => {
        throw new DtrError('UPSTREAM_ERROR', `POST answered ${status}`, { details: { status } });
      });
    expect(await new EhrResponses(failing(503)).save(qr, {}, now)).toMatchObject({
      kind: 'failed',
      status: 503,
      message: expect.stringMatching(/saved here but not yet in the EHR/),
    });
    expect(await new EhrResponses(failing(403)).save(qr, {}, now)).toMatchObject({ kind: 'failed', status: 502 });
    const offline = new ScriptedEhr(() => {
      throw new DtrError('UPSTREAM_TIMEOUT', 'POST timed out');
    });
    expect(await new EhrResponses(offline).save(qr, {}, now)).toMatchObject({ kind: 'failed', status: 502 });
  });
});

describe('contextReferences', () => {
  it('reads qr-context (2.2, nested) and context (2.0.1/2.1) references, nothing else', () => {
    const response: FhirResource = {
      resourceType: 'QuestionnaireResponse',
      extension: [
        {
          url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context',
          extension: [{ url: 'order', valueReference: { reference: 'DeviceRequest/o1' } }],
        },
        {
          url: 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/context',
          valueReference: { reference: 'Coverage/c1' },
        },
        { url: 'http://example.org/other', valueReference: { reference: 'Patient/p1' } },
      ],
    };
    expect(contextReferences(response)).toEqual(['DeviceRequest/o1', 'Coverage/c1']);
  });
});
