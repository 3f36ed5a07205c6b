import { type FhirResource, type PackageIssue, QuestionnairePackage } from '@dtr/fhir';
import type { PayerClient, PackageRequest } from '../payer-client.js';
import type { PackageCache } from './package-cache.js';
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

/**
 * Obtains the questionnaire package for a session: asks the payer (with `changedsince` when the content is already
 * cached), caches what comes back, validates the questionnaires in use, and reports blocking problems to the payer.
 */
export class PackageRetrieval {
  constructor(private readonly cache: PackageCache) {}

  async retrieve(client: PayerClient, request: PackageRequest): Promise<RetrievedPackage> {
    const payerId = client.payer.id;
    let changedSince: Date | undefined;
    const known = request.questionnaires ?? [];
    if (known.length > 0) {
      const cached = await Promise.all(known.map((c) => this.cache.questionnaire(payerId, c)));
      if (cached.every(Boolean)) changedSince = new Date(Math.min(...cached.map((c) => c!.retrievedAt.getTime())));
    }
    const response = await client.questionnairePackage({ ...request, ...(changedSince ? { changedSince } : {}) });
    const fresh = resourcesOf(response);
    await this.cache.store(payerId, fresh, response.retrievedAt);
    let questionnaires = fresh.filter((r) => r.resourceType === 'Questionnaire');
    const fromCache = questionnaires.length === 0 && changedSince !== undefined;
    if (fromCache) {
      questionnaires = (await Promise.all(known.map((c) => this.cache.questionnaire(payerId, c)))).map((c) => c!.resource);
    }
    // Resolve against everything known from this payer (a changedsince answer carries only what changed).
    const pkg = QuestionnairePackage.fromResources([...questionnaires, ...fresh, ...(await this.cache.all(payerId))]);
    const inUse = QuestionnairePackage.fromResources([...questionnaires, ...pkg.libraries.map((l) => l.resource), ...pkg.valueSets]);
    const issues = validatePackage(inUse);
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
