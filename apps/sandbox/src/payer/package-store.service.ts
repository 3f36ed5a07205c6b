import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { type Bundle, type Coding, type FhirResource, isResource, splitCanonical } from './fhir.types.js';

/**
 * `rules.json` beside a package's resources: which order codes need which questionnaires.
 * A rule coding without `system` matches the code in any system.
 */
export interface PackageRules {
  rules: Array<{ description?: string; codes: Coding[]; questionnaires: string[] }>;
}

const CQF_LIBRARY = 'http://hl7.org/fhir/StructureDefinition/cqf-library';

/**
 * Questionnaires, Libraries and ValueSets loaded from folders of FHIR JSON (each file a resource or a
 * Bundle; folders are walked recursively, JSON that is not FHIR, such as ELM, is skipped).
 */
export class PackageStore {
  private readonly resources: FhirResource[] = [];
  private readonly rules: PackageRules['rules'] = [];

  static async load(dirs: string[]): Promise<PackageStore> {
    const store = new PackageStore();
    for (const dir of dirs) await store.loadDir(dir);
    return store;
  }

  add(resource: FhirResource): void {
    if (resource.resourceType === 'Bundle') {
      for (const e of (resource as Bundle).entry ?? []) if (isResource(e.resource)) this.add(e.resource);
      return;
    }
    if (['Questionnaire', 'Library', 'ValueSet', 'CodeSystem'].includes(resource.resourceType))
      this.resources.push(resource);
  }

  /**
   * Publishes new or changed content (a payer updating its rules): replaces the resource of the same type, url and
   * version, stamped with `meta.lastUpdated` now so a `changedsince` request sees it.
   */
  publish(resource: FhirResource, at = new Date()): void {
    const same = (r: FhirResource) =>
      r.resourceType === resource.resourceType && r['url'] === resource['url'] && r['version'] === resource['version'];
    const index = this.resources.findIndex(same);
    const stamped = { ...resource, meta: { ...(resource.meta ?? {}), lastUpdated: at.toISOString() } } as FhirResource;
    if (index >= 0) this.resources.splice(index, 1, stamped);
    else this.add(stamped);
  }

  addRules(rules: PackageRules): void {
    this.rules.push(...rules.rules);
  }

  private async loadDir(dir: string): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        await this.loadDir(file);
      } else if (entry.name === 'rules.json') {
        this.addRules(JSON.parse(await readFile(file, 'utf8')) as PackageRules);
      } else if (entry.name.endsWith('.json')) {
        const parsed: unknown = JSON.parse(await readFile(file, 'utf8'));
        if (isResource(parsed)) this.add(parsed);
      }
    }
  }

  /** Latest version of a canonical when no version is given (string order is enough for the fixtures). */
  resolve(resourceType: string, canonical: string): FhirResource | undefined {
    const { url, version } = splitCanonical(canonical);
    // Content without a url (some payers' questionnaires) is named in rules by its relative reference, `Type/id`.
    const byId = url.startsWith(`${resourceType}/`) ? url.slice(resourceType.length + 1) : undefined;
    const matches = this.resources.filter(
      (r) =>
        r.resourceType === resourceType &&
        (r.url === url || (byId !== undefined && r.url === undefined && r.id === byId)) &&
        (version === undefined || r.version === version),
    );
    return matches.sort((a, b) => String(b.version ?? '').localeCompare(String(a.version ?? '')))[0];
  }

  /** Questionnaire canonicals the rules map any of these order codings to. */
  questionnairesForCodes(codings: Coding[]): string[] {
    const found = new Set<string>();
    for (const rule of this.rules) {
      const hit = rule.codes.some((rc) =>
        codings.some((c) => c.code === rc.code && (!rc.system || rc.system === c.system)),
      );
      if (hit) for (const q of rule.questionnaires) found.add(q);
    }
    return [...found];
  }

  /**
   * The questionnaire, every Library it uses (cqf-library, then Library.relatedArtifact depends-on,
   * transitively) and the ValueSets they and the items refer to.
   * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html (questionnaire package)
   */
  packageFor(questionnaire: FhirResource): FhirResource[] {
    const out = new Map<string, FhirResource>();
    const key = (r: FhirResource) => `${r.resourceType}|${r.url ?? r.id}|${r.version ?? ''}`;
    out.set(key(questionnaire), questionnaire);
    const pending: Array<{ type: string; canonical: string }> = [];
    for (const c of extensionCanonicals(questionnaire, CQF_LIBRARY)) pending.push({ type: 'Library', canonical: c });
    for (const vs of answerValueSets(questionnaire.item)) pending.push({ type: 'ValueSet', canonical: vs });
    while (pending.length > 0) {
      const next = pending.shift();
      if (!next) break;
      const found =
        this.resolve(next.type, next.canonical) ?? this.resolve(guessType(next.canonical) ?? next.type, next.canonical);
      if (!found || out.has(key(found))) continue;
      out.set(key(found), found);
      if (found.resourceType === 'Library') {
        const related = (found['relatedArtifact'] as Array<{ type?: string; resource?: string }> | undefined) ?? [];
        for (const ra of related) {
          if (ra.type === 'depends-on' && ra.resource)
            pending.push({ type: guessType(ra.resource) ?? 'Library', canonical: ra.resource });
        }
      }
    }
    return [...out.values()];
  }

  /** ValueSet by url for `$expand`, with an expansion built from `compose` when it carries none. */
  expand(canonical: string): FhirResource | undefined {
    const vs = this.resolve('ValueSet', canonical);
    if (!vs) return undefined;
    if (vs['expansion']) return vs;
    const include =
      (vs['compose'] as { include?: Array<{ system?: string; concept?: Coding[] }> } | undefined)?.include ?? [];
    const contains = include.flatMap((inc) =>
      (inc.concept ?? []).map((c) => ({ system: inc.system, code: c.code, display: c.display })),
    );
    return { ...vs, expansion: { timestamp: new Date().toISOString(), total: contains.length, contains } };
  }

  questionnaires(): FhirResource[] {
    return this.resources.filter((r) => r.resourceType === 'Questionnaire');
  }
}

function extensionCanonicals(resource: FhirResource, url: string): string[] {
  const exts = (resource['extension'] as Array<{ url?: string; valueCanonical?: string }> | undefined) ?? [];
  return exts
    .filter((e) => e.url === url && typeof e.valueCanonical === 'string')
    .map((e) => e.valueCanonical as string);
}

function answerValueSets(items: unknown): string[] {
  if (!Array.isArray(items)) return [];
  return items.flatMap((item: { answerValueSet?: string; item?: unknown }) => [
    ...(typeof item.answerValueSet === 'string' && !item.answerValueSet.startsWith('#') ? [item.answerValueSet] : []),
    ...answerValueSets(item.item),
  ]);
}

/** Canonicals written as `.../ValueSet/x` or `.../Library/x` say their type. */
function guessType(canonical: string): string | undefined {
  const m = /\/(ValueSet|Library|CodeSystem|Questionnaire)\/[^/]+$/.exec(splitCanonical(canonical).url);
  return m?.[1];
}

/** The repository root, found by walking up (this file also runs from dist/, one level deeper). */
function repoRoot(): string {
  let dir = import.meta.dirname;
  while (!existsSync(path.join(dir, 'apps/sandbox/fixtures/packages'))) {
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve(import.meta.dirname, '../../../..');
    dir = parent;
  }
  return dir;
}

/** Our own example packages, shipped with the sandbox. */
const FIXTURE_PACKAGES_DIR = path.join(repoRoot(), 'apps/sandbox/fixtures/packages');

/**
 * Package folders for a sandbox payer: our fixtures, plus each folder of the shared corpus
 * (`<repo>/../shared/corpus/packages/*`) when that is present. The corpus is read in place, never copied.
 */
export async function sandboxPackageDirs(
  corpusDir = path.resolve(repoRoot(), '../shared/corpus/packages'),
): Promise<string[]> {
  const dirs = [
    path.join(FIXTURE_PACKAGES_DIR, 'home-oxygen-example'),
    path.join(FIXTURE_PACKAGES_DIR, 'adaptive-example'),
  ];
  try {
    const entries = await readdir(corpusDir, { withFileTypes: true });
    dirs.push(
      ...entries
        .filter((e) => e.isDirectory())
        .map((e) => path.join(corpusDir, e.name))
        .sort(),
    );
  } catch {
    // No corpus beside the repository: the fixtures alone.
  }
  return dirs;
}
