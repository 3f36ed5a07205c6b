import { type FhirResource, parseCanonical, QuestionnairePackage } from '@dtr/fhir';
import { query } from '@dtr/persistence';
import type { DataSource } from 'typeorm';

const CACHED = new Set(['Questionnaire', 'Library', 'ValueSet']);

/** Identity of cached content: its canonical (or, for a Library without url such as FHIRHelpers, its name). */
function canonicalOf(resource: FhirResource): string | undefined {
  if (typeof resource['url'] === 'string') return resource['url'] as string;
  if (resource.resourceType === 'Library' && typeof resource['name'] === 'string')
    return `name:${resource['name'] as string}`;
  return resource.id ? `id:${resource.resourceType}/${resource.id}` : undefined;
}

/**
 * Payer content by canonical|version, per payer. A second session for the same order reuses it; `changedsince`
 * (the oldest retrieval of what the session needs) lets the payer send only what changed.
 */
export class PackageCache {
  /** Per payer: the cache's content as one package, and the stamp of the rows it was built from. */
  private readonly built = new Map<string, { stamp: string; pkg: QuestionnairePackage }>();

  constructor(private readonly dataSource: DataSource) {}

  /** Whether `store` keeps this resource (so a package built from the cache has it). */
  static keeps(resource: FhirResource): boolean {
    return CACHED.has(resource.resourceType) && canonicalOf(resource) !== undefined;
  }

  async store(payerId: string, resources: FhirResource[], retrievedAt: Date): Promise<number> {
    let stored = 0;
    for (const resource of resources) {
      if (!CACHED.has(resource.resourceType)) continue;
      const canonical = canonicalOf(resource);
      if (!canonical) continue;
      await query(
        this.dataSource,
        `INSERT INTO package_resource (payer_id, resource_type, canonical, version, resource, retrieved_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (payer_id, resource_type, canonical, version) DO UPDATE SET resource = EXCLUDED.resource, retrieved_at = EXCLUDED.retrieved_at`,
        [
          payerId,
          resource.resourceType,
          canonical,
          typeof resource['version'] === 'string' ? resource['version'] : '',
          JSON.stringify(resource),
          retrievedAt,
        ],
      );
      stored++;
    }
    return stored;
  }

  /** Every cached resource of a payer (the package content the engine resolves canonicals against). */
  async all(payerId: string): Promise<FhirResource[]> {
    const rows = await query<{ resource: FhirResource }>(
      this.dataSource,
      `SELECT resource FROM package_resource WHERE payer_id = $1 ORDER BY resource_type, canonical, version`,
      [payerId],
    );
    return rows.map((r) => r.resource);
  }

  /**
   * Everything cached for a payer as one package. The same object is returned while the payer's rows are unchanged
   * (row count, newest row version and retrieval time, written by this instance or any other), so the libraries'
   * ELM is read once, and the engine and the prefill workers keep what they prepared for it, across sessions. The
   * object is shared: callers must not change it.
   */
  async package(payerId: string): Promise<QuestionnairePackage> {
    const [row] = await query<{ n: number; x: string; at: Date | null }>(
      this.dataSource,
      `SELECT count(*)::int AS n, coalesce(max(xmin::text::bigint), 0)::text AS x, max(retrieved_at) AS at FROM package_resource WHERE payer_id = $1`,
      [payerId],
    );
    const stamp = `${row?.n ?? 0}|${row?.x ?? ''}|${row?.at ? new Date(row.at).getTime() : ''}`;
    const hit = this.built.get(payerId);
    if (hit?.stamp === stamp) return hit.pkg;
    // Read after the stamp: a write in between makes the next call's stamp differ, so a package is never kept stale.
    const pkg = QuestionnairePackage.fromResources(await this.all(payerId));
    this.built.set(payerId, { stamp, pkg });
    return pkg;
  }

  /**
   * The questionnaires (`url|version`) the payer last answered for this selection key (tenant, patient, coverage and
   * order codes, hashed: see PackageRetrieval), and when.
   */
  async selection(
    payerId: string,
    selectionKey: string,
  ): Promise<{ questionnaires: string[]; retrievedAt: Date } | undefined> {
    const rows = await query<{ questionnaires: string[]; retrieved_at: Date }>(
      this.dataSource,
      `SELECT questionnaires, retrieved_at FROM package_selection WHERE payer_id = $1 AND selection_key = $2`,
      [payerId, selectionKey],
    );
    return rows[0] ? { questionnaires: rows[0].questionnaires, retrievedAt: rows[0].retrieved_at } : undefined;
  }

  async rememberSelection(
    payerId: string,
    selectionKey: string,
    questionnaires: string[],
    retrievedAt: Date,
  ): Promise<void> {
    await query(
      this.dataSource,
      `INSERT INTO package_selection (payer_id, selection_key, questionnaires, retrieved_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (payer_id, selection_key) DO UPDATE SET questionnaires = EXCLUDED.questionnaires, retrieved_at = EXCLUDED.retrieved_at`,
      [payerId, selectionKey, questionnaires, retrievedAt],
    );
  }

  /** A cached Questionnaire by canonical (`url` or `url|version`), with when it was retrieved. */
  async questionnaire(
    payerId: string,
    canonical: string,
  ): Promise<{ resource: FhirResource; retrievedAt: Date } | undefined> {
    const { url, version } = parseCanonical(canonical);
    const rows = await query<{ resource: FhirResource; retrieved_at: Date }>(
      this.dataSource,
      `SELECT resource, retrieved_at FROM package_resource
       WHERE payer_id = $1 AND resource_type = 'Questionnaire' AND canonical = $2 AND ($3::text IS NULL OR version = $3)
       ORDER BY retrieved_at DESC LIMIT 1`,
      [payerId, url, version ?? null],
    );
    return rows[0] ? { resource: rows[0].resource, retrievedAt: rows[0].retrieved_at } : undefined;
  }
}
