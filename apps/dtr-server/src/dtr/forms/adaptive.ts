import type { FhirResource } from '@dtr/fhir';
import type { FormDefinitionRecord } from './form-session.repository.js';

/**
 * Adaptive questionnaires: the SDC `questionnaireAdaptive` extension in every DTR version (2.0.1: `valueBoolean` true
 * or a `valueUrl`; 2.1 and 2.2: a `valueUrl`, the base on which `$next-question` is called).
 * @see https://hl7.org/fhir/uv/sdc/STU3/StructureDefinition-sdc-questionnaire-questionnaireAdaptive.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#adaptive-form-considerations
 */
const QUESTIONNAIRE_ADAPTIVE = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-questionnaireAdaptive';
/** What the payer may not set on the response by its answer: the DTR context, decided by us on every save. */
const DTR_EXTENSIONS =
  /^http:\/\/hl7\.org\/fhir\/us\/davinci-dtr\/StructureDefinition\/(qr-context|qr-coverage|intendedUse|context)$/;
const INFORMATION_ORIGIN = 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/information-origin';

type Item = { linkId?: unknown; item?: unknown; answer?: unknown } & Record<string, unknown>;

/** The adaptive settings of a package Questionnaire, or undefined when it is a standard one. */
export function adaptiveOf(questionnaire: FhirResource): FormDefinitionRecord['adaptive'] | undefined {
  const extensions = Array.isArray(questionnaire['extension'])
    ? (questionnaire['extension'] as Array<Record<string, unknown>>)
    : [];
  const found = extensions.find(
    (e) => e['url'] === QUESTIONNAIRE_ADAPTIVE && (e['valueBoolean'] === true || typeof e['valueUrl'] === 'string'),
  );
  if (!found) return undefined;
  return { ...(typeof found['valueUrl'] === 'string' ? { url: found['valueUrl'] } : {}), extensions: [] };
}

/**
 * The Questionnaire an adaptive response starts from: the package's, contained (an id, no meta: dom-4), `derivedFrom`
 * the canonical being completed, with the questions the package already carried (usually none).
 */
export function startingQuestionnaire(questionnaire: FhirResource): FhirResource {
  const { meta: _meta, text: _text, ...rest } = questionnaire;
  const canonical = typeof questionnaire['url'] === 'string' ? questionnaire['url'] : undefined;
  const version = typeof questionnaire['version'] === 'string' ? `|${questionnaire['version']}` : '';
  return {
    ...rest,
    id: questionnaire.id ?? 'adaptive',
    ...(canonical ? { derivedFrom: [`${canonical}${version}`] } : {}),
  } as FhirResource;
}

/** The Questionnaire a response contains and references (`#id`), if any. */
export function containedQuestionnaire(response: FhirResource): FhirResource | undefined {
  const ref = response['questionnaire'];
  if (typeof ref !== 'string' || !ref.startsWith('#')) return undefined;
  const contained = Array.isArray(response['contained']) ? (response['contained'] as FhirResource[]) : [];
  return contained.find((r) => r?.resourceType === 'Questionnaire' && r.id === ref.slice(1));
}

/** The other resources the payer's answer contains (Libraries, ValueSets the new questions use). */
export function containedContent(response: FhirResource): FhirResource[] {
  const contained = Array.isArray(response['contained']) ? (response['contained'] as FhirResource[]) : [];
  return contained.filter((r) => r?.resourceType === 'Library' || r?.resourceType === 'ValueSet');
}

/** The root extensions of the payer's answer we keep on the response (not the DTR context, which is ours). */
export function payerExtensions(response: FhirResource): Array<Record<string, unknown>> {
  const extensions = Array.isArray(response['extension'])
    ? (response['extension'] as Array<Record<string, unknown>>)
    : [];
  return extensions.filter((e) => typeof e['url'] === 'string' && !DTR_EXTENSIONS.test(e['url']));
}

/** Every linkId of a Questionnaire's items, nested ones included. */
export function linkIdsOf(questionnaire: FhirResource): Set<string> {
  const out = new Set<string>();
  const walk = (items: unknown) => {
    for (const item of Array.isArray(items) ? (items as Item[]) : []) {
      if (typeof item.linkId === 'string') out.add(item.linkId);
      walk(item.item);
    }
  };
  walk(questionnaire['item']);
  return out;
}

/** The Questionnaire with only the items named (and the groups that hold them): what a step's prefill evaluates. */
export function onlyItems(questionnaire: FhirResource, linkIds: Set<string>): FhirResource {
  const keep = (items: unknown): Item[] =>
    (Array.isArray(items) ? (items as Item[]) : []).flatMap((item) => {
      if (typeof item.linkId === 'string' && linkIds.has(item.linkId)) return [item];
      const children = keep(item.item);
      return children.length > 0 ? [{ ...item, item: children }] : [];
    });
  return { ...questionnaire, item: keep(questionnaire['item']) };
}

/** The response's items of the named linkIds (nested ones in their groups). */
export function itemsNamed(response: FhirResource, linkIds: Set<string>): Item[] {
  return (onlyItems({ resourceType: 'Questionnaire', item: response['item'] }, linkIds)['item'] as Item[]) ?? [];
}

/**
 * A saved response's automatic answers only (information-origin `auto…`): the prefill an adaptive form resumed from
 * the EHR keeps, so those answers keep their origin while the clinician's stay theirs.
 */
export function automaticOnly(response: FhirResource): FhirResource {
  const automatic = (answer: Record<string, unknown>) => {
    const origin = (answer['extension'] as Array<Record<string, unknown>> | undefined)?.find(
      (e) => e['url'] === INFORMATION_ORIGIN,
    );
    const source = (origin?.['extension'] as Array<Record<string, unknown>> | undefined)?.find(
      (e) => e['url'] === 'source',
    );
    return typeof source?.['valueCode'] === 'string' && source['valueCode'].startsWith('auto');
  };
  const walk = (items: unknown): Item[] =>
    (Array.isArray(items) ? (items as Item[]) : []).map((item) => {
      const answers = (Array.isArray(item.answer) ? (item.answer as Array<Record<string, unknown>>) : []).filter(
        automatic,
      );
      const { answer: _answer, item: children, ...rest } = item;
      return {
        ...rest,
        ...(answers.length > 0 ? { answer: answers } : {}),
        ...(Array.isArray(children) ? { item: walk(children) } : {}),
      };
    });
  return { resourceType: 'QuestionnaireResponse', item: walk(response['item']) };
}

/** Bounds of a Questionnaire a payer's `$next-question` answer may bring (as a response's items are bounded). */
const MAX_ITEMS = 5000;
const MAX_DEPTH = 24;

/**
 * Why the Questionnaire of a payer's answer cannot be used, or undefined when it can: it must continue this form's
 * questionnaire (the same url), and its items must be a bounded tree of items with unique string linkIds.
 */
export function unusableQuestionnaire(questionnaire: FhirResource, url: string): string | undefined {
  if (typeof questionnaire['url'] === 'string' && questionnaire['url'] !== url)
    return `its Questionnaire is another one (${questionnaire['url'].slice(0, 200)})`;
  const seen = new Set<string>();
  const check = (items: unknown, depth: number): string | undefined => {
    if (items === undefined) return undefined;
    if (!Array.isArray(items)) return 'its items are not a list';
    if (depth > MAX_DEPTH) return 'its items are nested too deeply';
    for (const item of items as Item[]) {
      if (!item || typeof item !== 'object' || typeof item.linkId !== 'string' || item.linkId.length > 255)
        return 'an item has no linkId';
      if (seen.has(item.linkId)) return `the linkId ${item.linkId} is used twice`;
      seen.add(item.linkId);
      if (seen.size > MAX_ITEMS) return 'it has too many items';
      const problem = check(item.item, depth + 1);
      if (problem) return problem;
    }
    return undefined;
  };
  return check(questionnaire['item'], 0);
}
