import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { DtrError, parseUntrustedJson } from '@dtr/kernel';
import { type Bundle, type FhirResource, checkedBundleResources, resourceShapeProblem } from '@dtr/fhir';

/** Which shape a `$questionnaire-package` answer came in. */
type PackageShape = '2.2' | '2.1' | '2.0.1' | 'bundle' | 'folder';

export interface PackageResponse {
  shape: PackageShape;
  bundles: Bundle[];
  /** `outcome` parts (warnings to pass to the user). */
  outcomes: FhirResource[];
}

const BUNDLE_PARTS: Record<string, PackageShape> = { packagebundle: '2.2', PackageBundle: '2.1', return: '2.0.1' };

/**
 * Accepts every shape payers answer `$questionnaire-package` with: Parameters with `packagebundle` (DTR 2.2),
 * `PackageBundle` (2.1) or `return` (2.0.1) parts, possibly several; or a bare Bundle.
 * @see https://hl7.org/fhir/us/davinci-dtr/OperationDefinition-questionnaire-package.html
 */
export function parsePackageResponse(body: unknown, maxResources = Infinity): PackageResponse {
  const response = packageShapeOf(body);
  const count = response.bundles.reduce((n, b) => n + (Array.isArray(b.entry) ? b.entry.length : 0), 0);
  if (count > maxResources)
    throw new DtrError(
      'UPSTREAM_ERROR',
      `the questionnaire package has ${count} entries, more than the ${maxResources} accepted in one package`,
      { details: { entries: count, maxResources } },
    );
  return response;
}

function packageShapeOf(body: unknown): PackageResponse {
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new DtrError('UPSTREAM_ERROR', 'the questionnaire package is not a FHIR resource');
  }
  // Every element our code reads has its JSON type, in the whole answer (nested bundles included), before any walk.
  const problem = resourceShapeProblem(body);
  if (problem) throw new DtrError('UPSTREAM_ERROR', `the questionnaire package is malformed: ${problem}`);
  const resource = body as FhirResource;
  if (resource.resourceType === 'Bundle') return { shape: 'bundle', bundles: [resource as Bundle], outcomes: [] };
  if (resource.resourceType !== 'Parameters') {
    throw new DtrError(
      'UPSTREAM_ERROR',
      `the questionnaire package is a ${String(resource.resourceType)}, not Parameters or Bundle`,
    );
  }
  const parts = (resource['parameter'] as Array<{ name?: string; resource?: FhirResource }> | undefined) ?? [];
  const result: PackageResponse = { shape: '2.2', bundles: [], outcomes: [] };
  let shape: PackageShape | undefined;
  for (const part of parts) {
    if (part.name === 'outcome' && part.resource) {
      result.outcomes.push(part.resource);
      continue;
    }
    const partShape = part.name ? BUNDLE_PARTS[part.name] : undefined;
    if (!partShape || !part.resource) continue;
    if (part.resource.resourceType !== 'Bundle') {
      throw new DtrError(
        'UPSTREAM_ERROR',
        `the ${part.name} part is a ${String(part.resource.resourceType)}, not a Bundle`,
      );
    }
    shape ??= partShape;
    result.bundles.push(part.resource as Bundle);
  }
  if (result.bundles.length === 0) {
    throw new DtrError(
      'UPSTREAM_ERROR',
      'the questionnaire package has no packagebundle, PackageBundle or return part',
    );
  }
  result.shape = shape ?? '2.2';
  return result;
}

/** All resources of the bundles (entries without a resource are skipped; a malformed one is refused). */
export function resourcesOf(response: PackageResponse): FhirResource[] {
  return response.bundles.flatMap((bundle) =>
    checkedBundleResources(bundle, 'the questionnaire package', 'UPSTREAM_ERROR').map(
      (e) => e.resource as FhirResource,
    ),
  );
}

const JSON_LIMITS = { maxDepth: 256, maxBytes: 64 * 1024 * 1024 };

/**
 * Loads a package from a file (a `$questionnaire-package` answer in any shape, a Bundle, or one resource) or a
 * folder of such files (searched recursively; JSON that is not FHIR, such as decoded ELM, is skipped and
 * counted). For `dtr package check` and the sandbox payer.
 */
export function loadPackageFromPath(target: string): PackageResponse & { skipped: string[] } {
  const full = path.resolve(target);
  let stat;
  try {
    stat = statSync(full);
  } catch (cause) {
    throw new DtrError('NOT_FOUND', `no such file or folder: ${target}`, { cause });
  }
  if (stat.isFile()) return { ...parseFile(full), skipped: [] };
  const resources: FhirResource[] = [];
  const skipped: string[] = [];
  for (const file of jsonFiles(full)) {
    const value = readJson(file);
    if (!value || typeof value !== 'object' || typeof (value as FhirResource).resourceType !== 'string') {
      skipped.push(path.relative(full, file));
      continue;
    }
    const resource = value as FhirResource;
    if (resource.resourceType === 'Bundle' || resource.resourceType === 'Parameters') {
      try {
        resources.push(...resourcesOf(parsePackageResponse(resource)));
      } catch {
        skipped.push(path.relative(full, file));
      }
    } else {
      resources.push(resource);
    }
  }
  return {
    shape: 'folder',
    bundles: [{ resourceType: 'Bundle', type: 'collection', entry: resources.map((resource) => ({ resource })) }],
    outcomes: [],
    skipped,
  };
}

function parseFile(file: string): PackageResponse {
  const value = readJson(file) as FhirResource;
  if (
    value &&
    typeof value === 'object' &&
    value.resourceType !== 'Bundle' &&
    value.resourceType !== 'Parameters' &&
    typeof value.resourceType === 'string'
  ) {
    return {
      shape: 'bundle',
      bundles: [{ resourceType: 'Bundle', type: 'collection', entry: [{ resource: value }] }],
      outcomes: [],
    };
  }
  return parsePackageResponse(value);
}

function readJson(file: string): unknown {
  try {
    return parseUntrustedJson(readFileSync(file, 'utf8'), JSON_LIMITS);
  } catch (cause) {
    throw new DtrError('INVALID_INPUT', `${file}: ${cause instanceof Error ? cause.message : 'unreadable JSON'}`, {
      cause,
    });
  }
}

function* jsonFiles(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* jsonFiles(full);
    else if (entry.name.endsWith('.json')) yield full;
  }
}
