import { randomUUID } from 'node:crypto';

export type Resource = {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string; profile?: string[]; security?: unknown[] };
} & Record<string, unknown>;

export class FhirStoreError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Where each search parameter DTR content uses is found, per resource type (a small, explicit subset of R4). */
/** Where a resource names its patient: subject/patient/beneficiary, a Task's `for`, an Appointment's participants. */
const PATIENT_PATHS = ['subject', 'patient', 'beneficiary', 'for', 'participant.actor'];
const CODE_PATHS: Record<string, string[]> = {
  MedicationRequest: ['medicationCodeableConcept'],
  DeviceRequest: ['codeCodeableConcept'],
  Coverage: ['type'],
};
const DATE_PATHS = [
  'effectiveDateTime',
  'effectivePeriod.start',
  'onsetDateTime',
  'recordedDate',
  'authoredOn',
  'date',
  'period.start',
  'issued',
];
const SUPPORTED_PARAMS = new Set([
  '_id',
  '_lastUpdated',
  '_count',
  '_offset',
  'patient',
  'subject',
  'beneficiary',
  'code',
  'category',
  'status',
  'date',
  'identifier',
  'target',
]);

function get(resource: unknown, path: string): unknown[] {
  let current: unknown[] = [resource];
  for (const part of path.split('.')) {
    current = current.flatMap((c) => {
      const v = c && typeof c === 'object' ? (c as Record<string, unknown>)[part] : undefined;
      return v === undefined ? [] : Array.isArray(v) ? v : [v];
    });
  }
  return current;
}

/** The references a resource names its patient by (any of PATIENT_PATHS). */
export function patientReferences(resource: Resource): string[] {
  return PATIENT_PATHS.flatMap((p) => get(resource, `${p}.reference`)).map(String);
}

function codings(resource: Resource, paths: string[]): Array<{ system?: string; code?: string }> {
  return paths
    .flatMap((p) => get(resource, p))
    .flatMap((concept) => (concept as { coding?: Array<{ system?: string; code?: string }> }).coding ?? []);
}

function tokenMatches(values: Array<{ system?: string; code?: string }>, query: string): boolean {
  return query.split(',').some((token) => {
    const bar = token.indexOf('|');
    if (bar < 0) return values.some((v) => v.code === token);
    const system = token.slice(0, bar);
    const code = token.slice(bar + 1);
    return values.some((v) => (system === '' ? !v.system : v.system === system) && (code === '' || v.code === code));
  });
}

function compareDate(actual: string, query: string): boolean {
  const match = /^(eq|ne|gt|lt|ge|le|sa|eb)?(.+)$/.exec(query);
  const prefix = match?.[1] ?? 'eq';
  const value = match?.[2] ?? query;
  // Compare on the common precision (dates are prefixes of date-times).
  const a = actual.slice(0, value.length);
  switch (prefix) {
    case 'gt':
    case 'sa':
      return a > value;
    case 'lt':
    case 'eb':
      return a < value;
    case 'ge':
      return a >= value;
    case 'le':
      return a <= value;
    case 'ne':
      return a !== value;
    default:
      return a === value;
  }
}

/**
 * In-memory FHIR R4 storage with version history and the search parameters DTR content needs (patient, code,
 * category, status, date, identifier, `_id`, `_lastUpdated`, `_count`/`_offset`). Parameters it does not know are
 * refused (400), never silently ignored: an ignored filter would widen what a client reads.
 */
export class FhirStore {
  private versions = new Map<string, Resource[]>();

  /** Runs `fn`; when it throws, every write it made is undone (stored versions are never mutated, only appended). */
  atomically<T>(fn: () => T): T {
    const before = new Map([...this.versions].map(([key, history]) => [key, [...history]]));
    try {
      return fn();
    } catch (error) {
      this.versions = before;
      throw error;
    }
  }

  private key(type: string, id: string): string {
    return `${type}/${id}`;
  }

  all(type?: string): Resource[] {
    const out: Resource[] = [];
    for (const [key, history] of this.versions) {
      const current = history[history.length - 1]!;
      if (current['__deleted']) continue;
      if (!type || key.startsWith(`${type}/`)) out.push(current);
    }
    return out;
  }

  read(type: string, id: string): Resource | undefined {
    const history = this.versions.get(this.key(type, id));
    const current = history?.[history.length - 1];
    return current && !current['__deleted'] ? current : undefined;
  }

  vread(type: string, id: string, versionId: string): Resource | undefined {
    return this.versions.get(this.key(type, id))?.find((r) => r.meta?.versionId === versionId);
  }

  history(type: string, id: string): Resource[] {
    return [...(this.versions.get(this.key(type, id)) ?? [])].reverse();
  }

  /** Stores a new version (create when the id is new). */
  put(resource: Resource): Resource {
    const id = resource.id ?? randomUUID();
    const history = this.versions.get(this.key(resource.resourceType, id)) ?? [];
    const stored: Resource = {
      ...structuredClone(resource),
      id,
      meta: { ...(resource.meta ?? {}), versionId: String(history.length + 1), lastUpdated: new Date().toISOString() },
    };
    history.push(stored);
    this.versions.set(this.key(resource.resourceType, id), history);
    return stored;
  }

  create(resource: Resource): Resource {
    return this.put({ ...resource, id: randomUUID() });
  }

  search(type: string, params: Record<string, string>): Resource[] {
    for (const name of Object.keys(params)) {
      const [base, modifier] = name.split(':');
      if (!SUPPORTED_PARAMS.has(base!))
        throw new FhirStoreError(400, 'not-supported', `search parameter ${name} is not supported`);
      // No modifier is implemented (:not, :missing, :in, :exact, ...): refusing beats ignoring one, which would
      // answer a different search than the one asked (and hide an over-read from the tests).
      if (modifier !== undefined)
        throw new FhirStoreError(400, 'not-supported', `search modifier :${modifier} (in ${name}) is not supported`);
    }
    return this.all(type).filter((r) => {
      for (const [name, value] of Object.entries(params)) {
        if (name === '_count' || name === '_offset') continue;
        if (name === '_id' && !value.split(',').includes(r.id ?? '')) return false;
        if (name === '_lastUpdated' && !compareDate(r.meta?.lastUpdated ?? '', value)) return false;
        if (name === 'patient' || name === 'subject' || name === 'beneficiary') {
          const wanted = value.split(',').map((v) => (v.includes('/') ? v : `Patient/${v}`));
          const refs = type === 'Patient' ? [`Patient/${r.id}`] : patientReferences(r);
          if (!refs.some((ref) => wanted.some((w) => ref === w || ref.endsWith(`/${w}`)))) return false;
        }
        if (name === 'code' && !tokenMatches(codings(r, CODE_PATHS[type] ?? ['code']), value)) return false;
        if (name === 'category' && !tokenMatches(codings(r, ['category']), value)) return false;
        if (name === 'status' && !value.split(',').includes(String(r['status'] ?? ''))) return false;
        if (name === 'identifier') {
          const ids = get(r, 'identifier') as Array<{ system?: string; value?: string }>;
          const hit = value.split(',').some((t) => {
            const bar = t.indexOf('|');
            return bar < 0
              ? ids.some((i) => i.value === t)
              : ids.some((i) => i.system === t.slice(0, bar) && i.value === t.slice(bar + 1));
          });
          if (!hit) return false;
        }
        if (name === 'target') {
          const targets = get(r, 'target.reference').map(String);
          if (!value.split(',').some((t) => targets.some((ref) => ref === t || ref.endsWith(`/${t}`)))) return false;
        }
        if (name === 'date') {
          const dates = DATE_PATHS.flatMap((p) => get(r, p)).map(String);
          if (!value.split(',').every((q) => dates.some((d) => compareDate(d, q)))) return false;
        }
      }
      return true;
    });
  }
}
