import { createHash } from 'node:crypto';
import { type FhirResource, PayerHttpError, isResource, splitCanonical } from './fhir.types.js';
import type { PackageStore } from './package-store.service.js';
import { type DtrIgVersion, isAdaptive } from './questionnaire-package.usecase.js';

interface QrItem {
  linkId: string;
  answer?: unknown[];
  item?: QrItem[];
}

const IN_PART: Record<DtrIgVersion, string | undefined> = {
  '2.2': 'questionnaire-response',
  '2.1': 'in',
  '2.0.1': undefined,
};
const OUT_PART: Record<DtrIgVersion, string | undefined> = { '2.2': 'return', '2.1': 'out', '2.0.1': undefined };

/**
 * The input in exactly the shape of the payer's DTR version, else 400: 2.2 Parameters with one
 * `questionnaire-response` part, 2.1 Parameters with one `in` part (its input profile), 2.0.1 the bare
 * QuestionnaireResponse (SDC STU3).
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/StructureDefinition-dtr-next-question-input-parameters.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/StructureDefinition-dtr-next-question-input-parameters.html
 */
export function readNextQuestionInput(body: unknown, version: DtrIgVersion): FhirResource {
  const part = IN_PART[version];
  if (!part) {
    if (isResource(body) && body.resourceType === 'QuestionnaireResponse') return body;
    throw new PayerHttpError(400, 'invalid', 'DTR 2.0.1 $next-question takes the bare QuestionnaireResponse');
  }
  const params = isResource(body) && body.resourceType === 'Parameters' ? body['parameter'] : undefined;
  const parts = Array.isArray(params) ? (params as Array<{ name?: string; resource?: unknown }>) : [];
  const named = parts.filter((p) => p.name === part);
  const resource = named[0]?.resource;
  if (
    named.length === 1 &&
    parts.length === 1 &&
    isResource(resource) &&
    resource.resourceType === 'QuestionnaireResponse'
  )
    return resource;
  throw new PayerHttpError(
    400,
    'invalid',
    `DTR ${version} $next-question takes Parameters with one '${part}' part holding the QuestionnaireResponse`,
  );
}

/** The answer in the version's shape: a `return` (2.2) or `out` (2.1) part, the bare resource for 2.0.1. */
export function nextQuestionOutput(qr: FhirResource, version: DtrIgVersion): FhirResource {
  const part = OUT_PART[version];
  return part ? { resourceType: 'Parameters', parameter: [{ name: part, resource: qr }] } : qr;
}

/**
 * Deterministic adaptive logic for the sandbox: the questions of the adaptive fixture are asked in order,
 * one more each time the previous ones are answered; once all are answered the response is completed.
 */
export function nextQuestion(store: PackageStore, qr: FhirResource): FhirResource {
  const contained = ((qr['contained'] as unknown[] | undefined) ?? []).filter(isResource);
  const containedQ = contained.find((r) => r.resourceType === 'Questionnaire');
  const ref = typeof qr['questionnaire'] === 'string' ? (qr['questionnaire'] as string) : '';
  const canonical = ref.startsWith('#') ? containedQ?.url : ref;
  const source = canonical
    ? (store.resolve('Questionnaire', canonical) ?? store.resolve('Questionnaire', splitCanonical(canonical).url))
    : undefined;
  if (!source || !isAdaptive(source))
    throw new PayerHttpError(
      404,
      'not-found',
      'the questionnaire is not an adaptive questionnaire known to this payer',
    );

  const allItems = (source['item'] as QrItem[] | undefined) ?? [];
  const answers = new Map<string, QrItem>();
  for (const it of (qr['item'] as QrItem[] | undefined) ?? [])
    if (it.answer && it.answer.length > 0) answers.set(it.linkId, it);
  // An answer to a question the contained Questionnaire never asked is invalid (spec: 400 with an OperationOutcome).
  const asked0 = new Set(((containedQ?.['item'] as QrItem[] | undefined) ?? []).map((i) => i.linkId));
  for (const linkId of answers.keys())
    if (containedQ && !asked0.has(linkId))
      throw new PayerHttpError(400, 'invalid', `item ${linkId} is not a question of the contained Questionnaire`);
  let asked = 0;
  while (asked < allItems.length && answers.has(allItems[asked]?.linkId ?? '')) asked++;
  const done = asked >= allItems.length;
  const shown = allItems.slice(0, done ? allItems.length : asked + 1);

  const qid = containedQ?.id ?? 'adaptive';
  const questionnaire: FhirResource = {
    ...(containedQ ?? {}),
    resourceType: 'Questionnaire',
    id: qid,
    url: source.url,
    version: source.version,
    status: 'active',
    extension: source['extension'],
    item: shown,
  };
  return {
    ...qr,
    contained: [questionnaire, ...contained.filter((r) => r !== containedQ)],
    questionnaire: `#${qid}`,
    status: done ? 'completed' : 'in-progress',
    ...(done ? { extension: [...extensionsOf(qr), coverageInformation(qr, [...answers.values()])] } : {}),
    item: shown.filter((i) => answers.has(i.linkId)).map((i) => answers.get(i.linkId)),
  };
}

const COVERAGE_INFORMATION = 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information';

const extensionsOf = (r: FhirResource): Array<{ url?: string }> =>
  ((r['extension'] as Array<{ url?: string }> | undefined) ?? []).filter((e) => e.url !== COVERAGE_INFORMATION);

/**
 * The payer's determination once the adaptive form is complete: CRD's coverage-information on the response's root,
 * for the coverage the response names (qr-coverage, or a Coverage in qr-context), with an assertion id derived from
 * the answers (the same answers give the same id).
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#determinations-from-adaptive-forms
 */
function coverageInformation(qr: FhirResource, answers: QrItem[]): Record<string, unknown> {
  const coverage = (qr['extension'] as Array<{ valueReference?: { reference?: string } }> | undefined)
    ?.map((e) => e.valueReference?.reference)
    .find((ref) => typeof ref === 'string' && /(^|\/)Coverage\/[^/]+$/.test(ref));
  const assertion = createHash('sha256').update(JSON.stringify(answers)).digest('hex').slice(0, 16);
  return {
    url: COVERAGE_INFORMATION,
    extension: [
      ...(coverage ? [{ url: 'coverage', valueReference: { reference: coverage } }] : []),
      { url: 'covered', valueCode: 'covered' },
      { url: 'pa-needed', valueCode: 'no-auth' },
      { url: 'date', valueDate: new Date().toISOString().slice(0, 10) },
      { url: 'coverage-assertion-id', valueString: `sandbox-${assertion}` },
    ],
  };
}
