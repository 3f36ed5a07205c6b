/**
 * FHIR references and canonicals, parsed in one place.
 * @see https://hl7.org/fhir/R4/references.html
 * @see https://hl7.org/fhir/R4/datatypes.html#id
 */

/**
 * A FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`, but not made of dots only (`.` and `..` are path segments, not ids: in a URL
 * they walk out of the resource type).
 */
export const FHIR_ID = /^(?!\.+$)[A-Za-z0-9\-.]{1,64}$/;

/** A resource type name as it appears in a reference or a REST path (`Patient`, `DeviceRequest`). */
export const FHIR_RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;

export function isFhirId(value: unknown): value is string {
  return typeof value === 'string' && FHIR_ID.test(value);
}

export function isResourceType(value: unknown): value is string {
  return typeof value === 'string' && FHIR_RESOURCE_TYPE.test(value);
}

/** `Type/id`, `Type/id/_history/v`, or either after an absolute FHIR base (`https://ehr/fhir/Type/id`). */
export interface ResourceReference {
  kind: 'resource';
  type: string;
  id: string;
  /** The `_history` version, when the reference names one. */
  version?: string;
  /** The FHIR base of an absolute reference (`https://ehr/fhir`), without the trailing slash. */
  base?: string;
}

/** `#id`: a resource contained in the referring one. */
interface ContainedReference {
  kind: 'contained';
  id: string;
}

export type ParsedReference = ResourceReference | ContainedReference;

const ABSOLUTE_BASE = /^[a-z][a-z0-9+.-]*:\/\/[^/?#\s]+(?:\/[^?#\s]*)?$/i;

/**
 * Parses a literal reference. Anything else (a search URL, a urn:uuid, a malformed id or type, a query or
 * fragment after the id) is `undefined`.
 */
export function parseReference(reference: string | undefined | null): ParsedReference | undefined {
  if (typeof reference !== 'string' || reference.length === 0) return undefined;
  if (reference.startsWith('#')) {
    const id = reference.slice(1);
    return isFhirId(id) ? { kind: 'contained', id } : undefined;
  }
  const parts = reference.split('/');
  let tail = parts.length;
  let version: string | undefined;
  if (parts.length >= 4 && parts.at(-2) === '_history') {
    version = parts.at(-1);
    if (!isFhirId(version)) return undefined;
    tail -= 2;
  }
  if (tail < 2) return undefined;
  const type = parts[tail - 2];
  const id = parts[tail - 1];
  if (!isResourceType(type) || !isFhirId(id)) return undefined;
  let base: string | undefined;
  if (tail > 2) {
    base = parts.slice(0, tail - 2).join('/');
    if (!ABSOLUTE_BASE.test(base)) return undefined;
  }
  return { kind: 'resource', type, id, ...(version !== undefined ? { version } : {}), ...(base ? { base } : {}) };
}

/** The resource reference (not contained), or `undefined`. */
export function parseResourceReference(reference: string | undefined | null): ResourceReference | undefined {
  const parsed = parseReference(reference);
  return parsed?.kind === 'resource' ? parsed : undefined;
}

/** `Type/id` of a resource reference: the base and `_history` version dropped. */
export function relativeReference(reference: ResourceReference): string {
  return `${reference.type}/${reference.id}`;
}

/** A canonical URL, optionally `url|version`. */
export interface Canonical {
  url: string;
  version?: string;
}

/** Splits `url|version` (the version after the first `|`; an empty version counts as none). */
export function parseCanonical(canonical: string): Canonical {
  const bar = canonical.indexOf('|');
  if (bar < 0) return { url: canonical };
  const version = canonical.slice(bar + 1);
  return version ? { url: canonical.slice(0, bar), version } : { url: canonical.slice(0, bar) };
}
