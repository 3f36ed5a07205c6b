import { type FhirResource, fhirModelMalformedElements, fhirModelShapeProblems } from '@dtr/fhir';
import type { PrefillIssue } from './prefill.types.js';

/**
 * Each resource read from the EHR is screened against the shape of the FHIR R4 model before it is evaluated (see
 * fhirModelShapeProblems in @dtr/fhir). A resource that does not fit is left out of evaluation (the Patient: its
 * malformed elements) with an issue naming it, so that no answer depends on how the CQL engine happens to read
 * malformed data (cql-exec-fhir reads `coding: {...}` as a one-item list in some places and not in others, and
 * compares a numeric `birthDate` as if it were absent).
 */

/** The shape problems of one resource (at most a few), empty when it fits the model or its type is not in it. */
export const resourceShapeProblems = fhirModelShapeProblems;

export interface ScreenedResource {
  /** What evaluation may use: the resource itself, a Patient without its malformed elements, or nothing. */
  resource: FhirResource | undefined;
  /** The `invalid-resource` issue to report, naming the resource and what is wrong. */
  issue: PrefillIssue | undefined;
}

const screened = new WeakMap<object, ScreenedResource>();

/**
 * A resource read from the EHR, screened before evaluation: one that fits the FHIR model is used as is; one that
 * does not is left out with an issue naming it. The Patient cannot be left out (nothing could be evaluated), so a
 * malformed Patient is used without its malformed elements, and the issue names them. Remembered per resource
 * object: the reads and searches a session shares hand the same objects to every questionnaire.
 */
export function screenResource(resource: FhirResource): ScreenedResource {
  let found = screened.get(resource);
  if (found) return found;
  const problems = fhirModelShapeProblems(resource);
  const name = `${resource.resourceType}/${resource.id ?? '?'}`;
  if (problems.length === 0) {
    found = { resource, issue: undefined };
  } else if (resource.resourceType === 'Patient') {
    const object = resource as unknown as Record<string, unknown>;
    const dropped = fhirModelMalformedElements(resource);
    const kept = Object.fromEntries(
      Object.entries(object).filter(([key]) => !dropped.includes(key)),
    ) as unknown as FhirResource;
    found = {
      resource: kept,
      issue: {
        severity: 'warning',
        code: 'invalid-resource',
        message: `${name}: ${problems.join('; ')}; evaluated without ${dropped.join(', ')}`,
      },
    };
  } else {
    found = {
      resource: undefined,
      issue: {
        severity: 'warning',
        code: 'invalid-resource',
        message: `${name}: ${problems.join('; ')}; left out of evaluation`,
      },
    };
  }
  screened.set(resource, found);
  return found;
}

/** The issue for a resource that does not fit the FHIR model, or undefined when it fits (see screenResource). */
export function invalidResourceIssue(resource: FhirResource): PrefillIssue | undefined {
  return screenResource(resource).issue;
}
