import { createHash } from 'node:crypto';
import { CQF_LIBRARY, type FhirResource, type PackageIssue, QuestionnairePackage } from '@dtr/fhir';
import type { PayerClient, PackageRequest } from '../payer-client.js';
import { type CompileCqlOptions, compileCqlOnlyLibraries } from '@dtr/fhir';
import { PackageCache } from './package-cache.js';
import { resourcesOf } from './package-response.js';
import { isUsable, validatePackage } from './package-validator.js';

export interface RetrievedPackage {
  pkg: QuestionnairePackage;
  questionnaires: FhirResource[];
  issues: PackageIssue[];
  /** Warnings the payer sent with the package (`outcome`), to show the user. */
  outcomes: FhirResource[];
  /** True when nothing new came back and the cached content was used. */
  fromCache: boolean;
  /** True when problems were reported to the payer with $log-questionnaire-errors. */
  reported: boolean;
}

/** Whether a ValueSet carries its codes: an expansion, or a compose that only lists concepts. */
function enumerated(valueSet: FhirResource): boolean {
  if ((valueSet['expansion'] as { contains?: unknown[] } | undefined)?.contains) return true;
  const include = (
    valueSet['compose'] as
      { include?: Array<{ concept?: unknown[]; filter?: unknown[]; valueSet?: unknown[] }> } | undefined
  )?.include;
  return (
    Boolean(include?.length) &&
    include!.every((i) => Array.isArray(i.concept) && i.concept.length > 0 && !i.filter?.length && !i.valueSet?.length)
  );
}

/**
 * Canonicals of the value sets that the questionnaires' items (answerValueSet) and their libraries (ELM valuesets,
 * includes followed) use, which the package lacks or carries without codes.
 */
function valueSetsToExpand(pkg: QuestionnairePackage, questionnaires: FhirResource[]): string[] {
  const wanted = new Set<string>();
  const seen = new Set<object>();
  const visitLibrary = (library: ReturnType<QuestionnairePackage['libraryByCanonical']>) => {
    if (!library?.elm || seen.has(library)) return;
    seen.add(library);
    for (const vs of library.elm.library.valueSets?.def ?? []) wanted.add(vs.id);
    for (const include of library.elm.library.includes?.def ?? [])
      visitLibrary(pkg.libraryByIdentifier(include.path, include.version));
  };
  const visitItems = (items: Array<{ answerValueSet?: string; item?: unknown[] }> | undefined) => {
    for (const item of items ?? []) {
      if (item.answerValueSet && !item.answerValueSet.startsWith('#')) wanted.add(item.answerValueSet);
      visitItems(item.item as typeof items);
    }
  };
  for (const questionnaire of questionnaires) {
    for (const ext of (questionnaire['extension'] as Array<{ url?: string; valueCanonical?: string }> | undefined) ??
      []) {
      if (ext.url === CQF_LIBRARY && ext.valueCanonical) visitLibrary(pkg.libraryByCanonical(ext.valueCanonical));
    }
    visitItems(questionnaire['item'] as Array<{ answerValueSet?: string }> | undefined);
  }
  return [...wanted].filter((url) => {
    const vs = pkg.valueSetByUrl(url);
    return !vs || !enumerated(vs);
  });
}

/** The order codes (`system|code`, sorted) a payer's rules select questionnaires by; undefined when there are none. */
function orderCodesKey(orders: FhirResource[]): string | undefined {
  const codes = new Set<string>();
  for (const order of orders) {
    for (const key of [
      'code',
      'codeCodeableConcept',
      'medicationCodeableConcept',
      'productOrService',
      'serviceType',
      'type',
      'oralDiet',
    ]) {
      const value = order[key] as
        | { coding?: Array<{ system?: string; code?: string }> }
        | Array<{ coding?: Array<{ system?: string; code?: string }> }>
        | undefined;
      for (const concept of Array.isArray(value) ? value : value ? [value] : []) {
        for (const c of concept.coding ?? []) if (c.code) codes.add(`${c.system ?? ''}|${c.code}`);
      }
    }
  }
  return codes.size > 0 ? [...codes].sort().join(',') : undefined;
}

/**
 * What decides the payer's questionnaire choice, hashed: the caller's scope (tenant and patient, a keyed hash), the
 * coverage (id, plan and other classes, payor) and the order codes. Undefined when the orders carry no codes.
 */
function selectionKeyOf(request: PackageRequest, codes: string | undefined): string | undefined {
  if (!codes) return undefined;
  const coverage = request.coverages[0];
  const plan = coverage
    ? {
        id: coverage.id ?? null,
        class: ((coverage['class'] as Array<{ type?: { coding?: unknown[] }; value?: unknown }> | undefined) ?? []).map(
          (c) => [c.type?.coding ?? null, c.value ?? null],
        ),
        payor: coverage['payor'] ?? null,
      }
    : null;
  return createHash('sha256')
    .update(JSON.stringify([request.selectionScope ?? '', plan, codes]))
    .digest('hex');
}

/**
 * Obtains the questionnaire package for a session: asks the payer (with `changedsince` when the content is already
 * cached), caches what comes back, validates the questionnaires in use, and reports blocking problems to the payer.
 */
export class PackageRetrieval {
  /** `compile`: how CQL-only libraries are translated (a server passes its translator process's, with its size cap). */
  constructor(
    private readonly cache: PackageCache,
    private readonly compile: CompileCqlOptions = {},
  ) {}

  async retrieve(client: PayerClient, request: PackageRequest): Promise<RetrievedPackage> {
    const payerId = client.payer.id;
    const codes = selectionKeyOf(request, orderCodesKey(request.orders));
    // What the session needs: the questionnaires the launch named, else those the payer answered last time for orders
    // with the same codes. When all of them are cached, ask only for what changed since the oldest retrieval.
    const fromLaunch = request.questionnaires ?? [];
    const remembered = fromLaunch.length === 0 && codes ? await this.cache.selection(payerId, codes) : undefined;
    const known = fromLaunch.length > 0 ? fromLaunch : (remembered?.questionnaires ?? []);
    const cached = await Promise.all(known.map((c) => this.cache.questionnaire(payerId, c)));
    const allCached = known.length > 0 && cached.every(Boolean);
    const changedSince = allCached
      ? new Date(
          Math.min(...cached.map((c) => c!.retrievedAt.getTime()), remembered?.retrievedAt.getTime() ?? Infinity),
        )
      : undefined;
    const response = await client.questionnairePackage({ ...request, ...(changedSince ? { changedSince } : {}) });
    // Libraries shipped as CQL only are compiled to ELM once, as they arrive; the cache keeps the compiled form.
    const { resources: fresh, issues: compileIssues } = await compileCqlOnlyLibraries(
      resourcesOf(response),
      this.compile,
    );
    await this.cache.store(payerId, fresh, response.retrievedAt);
    const freshQuestionnaires = fresh.filter((r) => r.resourceType === 'Questionnaire');
    let questionnaires = freshQuestionnaires;
    if (changedSince) {
      // A changedsince answer carries only what changed: the rest of what the session needs comes from the cache.
      const urlOf = (r: FhirResource) => r['url'];
      const unchanged = cached
        .map((c) => c!.resource)
        .filter((q) => !freshQuestionnaires.some((f) => urlOf(f) === urlOf(q)));
      questionnaires = [...freshQuestionnaires, ...unchanged];
    }
    const fromCache = changedSince !== undefined && freshQuestionnaires.length === 0;
    if (codes && questionnaires.length > 0) {
      const canonicals = questionnaires.map(
        (q) =>
          `${String(q['url'] ?? `Questionnaire/${q.id}`)}${typeof q['version'] === 'string' ? `|${q['version']}` : ''}`,
      );
      await this.cache.rememberSelection(
        payerId,
        codes,
        canonicals,
        fromCache ? (remembered?.retrievedAt ?? response.retrievedAt) : response.retrievedAt,
      );
    }
    // Resolve against everything known from this payer (a changedsince answer carries only what changed). When the
    // cache holds all of it, the cache's own package object is used: unchanged content is then not read, parsed or
    // prepared again in later sessions.
    const packageOf = async (extra: FhirResource[]) =>
      [...fresh, ...extra].every((r) => PackageCache.keeps(r))
        ? await this.cache.package(payerId)
        : QuestionnairePackage.fromResources([
            ...questionnaires,
            ...extra,
            ...fresh,
            ...(await this.cache.all(payerId)),
          ]);
    let pkg = await packageOf([]);
    // Value sets the questionnaires' libraries and items use but the package does not carry enumerated: expanded by
    // the payer, cached with the rest (so a later session has them), and named when the payer cannot expand them.
    const expansionIssues: PackageIssue[] = [];
    const toExpand = valueSetsToExpand(pkg, questionnaires);
    if (toExpand.length > 0) {
      const expanded: FhirResource[] = [];
      for (const url of toExpand) {
        try {
          expanded.push(await client.expandValueSet(url));
        } catch (error) {
          expansionIssues.push({
            severity: 'warning',
            code: 'valueset-expand-failed',
            message: `value set ${url} is not in the package and the payer could not expand it (${error instanceof Error ? error.message.slice(0, 160) : 'error'}): retrieves that use it read the whole resource type`,
            valueSet: url,
          });
        }
      }
      if (expanded.length > 0) {
        await this.cache.store(payerId, expanded, response.retrievedAt);
        pkg = await packageOf(expanded);
      }
    }
    // The package's own questionnaire objects, so what was prepared for them is reused.
    questionnaires = questionnaires.map((q) => pkg.sameQuestionnaire(q) ?? q);
    const inUse = pkg.withQuestionnaires(questionnaires);
    const issues = [
      ...compileIssues,
      ...validatePackage(inUse).filter(
        (i) => !(i.code === 'valueset-not-in-package' && expansionIssues.some((e) => e.valueSet === i.valueSet)),
      ),
      ...expansionIssues,
    ];
    let reported = false;
    if (!isUsable(issues)) {
      for (const questionnaire of questionnaires) {
        const key = inUse.questionnaireKey(questionnaire);
        const mine = issues.filter((i) => i.questionnaire === key || (!i.questionnaire && i.severity === 'error'));
        if (mine.length > 0) {
          await client.logQuestionnaireErrors(key, mine);
          reported = true;
        }
      }
    }
    return { pkg, questionnaires, issues, outcomes: response.outcomes, fromCache, reported };
  }
}
