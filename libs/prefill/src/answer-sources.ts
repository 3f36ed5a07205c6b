import type { FhirResource } from '@dtr/fhir';
import type { AnswerSource } from './prefill.types.js';

/** Sources kept per item before the rest is summarised as `Type/*` (labelled resources are always kept). */
const MAX_SOURCES_PER_ITEM = 200;

interface BoundItem {
  linkId: string;
  /** The CQL define the item's expression names (or its inline expression was compiled into). */
  define?: { library: string; define: string };
  /** A FHIRPath expression: it reads the launch context resources. */
  fhirpath?: boolean;
}

/**
 * Which resources each item's answer may have been drawn from: for a CQL expression every resource of the types its
 * define's retrieves read (over-approximating by type on purpose: over-flagging is fine, missing one is not), plus
 * the context resources a library receives as parameters; for a FHIRPath expression the context resources. Only the
 * reference and security labels are kept: what the disclosure rules need, no content.
 */
export function answerSources(
  items: BoundItem[],
  retrieveTypes: (define: { library: string; define: string }) => Set<string>,
  resources: FhirResource[],
  context: FhirResource[],
): Record<string, AnswerSource[]> {
  const byType = new Map<string, FhirResource[]>();
  for (const r of resources) {
    const list = byType.get(r.resourceType) ?? [];
    list.push(r);
    byType.set(r.resourceType, list);
  }
  const out: Record<string, AnswerSource[]> = {};
  for (const item of items) {
    const drawn = new Set<FhirResource>(context);
    if (item.define)
      for (const type of retrieveTypes(item.define)) for (const r of byType.get(type) ?? []) drawn.add(r);
    if (!item.define && !item.fhirpath) continue;
    const sources = summarise([...drawn]);
    if (sources.length > 0) out[item.linkId] = [...(out[item.linkId] ?? []), ...sources];
  }
  return out;
}

function summarise(resources: FhirResource[]): AnswerSource[] {
  const sources: AnswerSource[] = [];
  const overflow = new Set<string>();
  for (const r of resources) {
    const labels = (r.meta?.security ?? []).map((l) => ({
      ...(l.system ? { system: l.system } : {}),
      ...(l.code ? { code: l.code } : {}),
    }));
    const reference = `${r.resourceType}/${r.id ?? '*'}`;
    if (labels.length > 0) sources.push({ reference, labels });
    else if (sources.length < MAX_SOURCES_PER_ITEM) sources.push({ reference });
    else overflow.add(`${r.resourceType}/*`);
  }
  for (const reference of overflow) sources.push({ reference });
  return sources;
}
