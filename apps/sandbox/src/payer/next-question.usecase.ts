import { type FhirResource, PayerHttpError, isResource, splitCanonical } from './fhir.types.js';
import type { PackageStore } from './package-store.service.js';
import { isAdaptive } from './questionnaire-package.usecase.js';

interface QrItem {
  linkId: string;
  answer?: unknown[];
  item?: QrItem[];
}

/**
 * Accepts DTR 2.2 (`questionnaire-response` part), 2.1 (`in` part) or a bare QuestionnaireResponse.
 * @see https://hl7.org/fhir/uv/sdc/STU3/OperationDefinition-Questionnaire-next-question.html
 */
export function readNextQuestionInput(body: unknown): FhirResource {
  if (isResource(body) && body.resourceType === 'QuestionnaireResponse') return body;
  if (isResource(body) && body.resourceType === 'Parameters') {
    const params = (body['parameter'] as Array<{ name?: string; resource?: unknown }> | undefined) ?? [];
    const part = params.find((p) => p.name === 'questionnaire-response' || p.name === 'in');
    if (isResource(part?.resource) && part.resource.resourceType === 'QuestionnaireResponse') return part.resource;
  }
  throw new PayerHttpError(
    400,
    'invalid',
    'expected a QuestionnaireResponse, bare or in a questionnaire-response/in parameter',
  );
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
    item: shown.filter((i) => answers.has(i.linkId)).map((i) => answers.get(i.linkId)),
  };
}
