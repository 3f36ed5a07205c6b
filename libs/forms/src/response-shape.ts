import type { FhirResource } from '@dtr/fhir';
import type { FormDefinition, FormIgVersion, ResponseMeta } from './form.types.js';
import { originExtension, readOrigin, withOrigin } from './information-origin.js';
import type { Answer, ResponseNode } from './questionnaire-items.js';

/**
 * The DTR QuestionnaireResponse profile, per IG version:
 * - 2.0.1 and 2.1: `qr-context` (2..*) for the order(s) AND the coverage (and an encounter when given), `item` 1..*;
 * - 2.2: `qr-coverage` (1..*) for the coverage, `qr-context` (0..*) for the order(s) and encounter, `item` 0..*;
 * - every version: `intendedUse` (1..*, CRD DocReason), `questionnaire` (canonical with version), `subject`,
 *   `author`, `authored`, and information-origin on every answer.
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/StructureDefinition-dtr-questionnaireresponse.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/StructureDefinition-dtr-questionnaireresponse.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2/StructureDefinition-dtr-questionnaireresponse.html
 */

const DTR = 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/';
const QR_PROFILE = `${DTR}dtr-questionnaireresponse`;
const QR_CONTEXT = `${DTR}qr-context`;
const QR_COVERAGE = `${DTR}qr-coverage`;
const INTENDED_USE = `${DTR}intendedUse`;
/** Written by earlier releases of this app and by some test kits; replaced on every save. */
const LEGACY_CONTEXT = `${DTR}context`;
const OURS = new Set([QR_CONTEXT, QR_COVERAGE, INTENDED_USE, LEGACY_CONTEXT]);

/** 2.0.1 and 2.1 examples use CRD's `temp` code system; 2.2 uses `coverage-information-codes`. */
const DOC_REASON_SYSTEM: Record<FormIgVersion, string> = {
  '2.0.1': 'http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp',
  '2.1': 'http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp',
  '2.2': 'http://hl7.org/fhir/us/davinci-crd/CodeSystem/coverage-information-codes',
};
const DOC_REASON_DISPLAY: Record<string, string> = {
  withpa: 'Include with prior authorization request',
  withclaim: 'Include with claim',
  withorder: 'Include with order',
  'retain-doc': 'Retain documentation',
  OTH: 'Other',
};

const reference = (r: string) => ({ valueReference: { reference: r } });

function contextExtensions(meta: ResponseMeta, version: FormIgVersion): Array<Record<string, unknown>> {
  const coverage = meta.coverage ?? [];
  const context = [...meta.orders, ...(meta.encounter ? [meta.encounter] : [])];
  if (version === '2.2')
    return [
      ...coverage.map((c) => ({ url: QR_COVERAGE, ...reference(c) })),
      ...context.map((c) => ({ url: QR_CONTEXT, ...reference(c) })),
    ];
  return [...context, ...coverage].map((c) => ({ url: QR_CONTEXT, ...reference(c) }));
}

/** Every answer's information-origin written in the version's codes, with an author only where dtrx-1 allows one. */
export function normaliseOrigins(items: ResponseNode[], version: FormIgVersion): ResponseNode[] {
  const answer = (a: Answer): Answer => {
    const origin = readOrigin(a);
    const next = origin ? withOrigin(a, originExtension(origin.origin, version, origin.author)) : a;
    return a.item ? { ...next, item: normaliseOrigins(a.item, version) } : next;
  };
  return items.map((node) => ({
    ...node,
    ...(node.answer ? { answer: node.answer.map(answer) } : {}),
    ...(node.item ? { item: normaliseOrigins(node.item, version) } : {}),
  }));
}

export function shapeResponse(
  form: FormDefinition,
  response: FhirResource,
  meta: ResponseMeta,
  status: 'in-progress' | 'completed' | 'stopped',
): FhirResource {
  const version = form.igVersion;
  const payers = meta.adaptive?.extensions ?? [];
  const fromPayer = new Set(payers.map((e) => e['url']));
  const kept = (Array.isArray(response['extension']) ? (response['extension'] as Array<{ url?: string }>) : []).filter(
    (e) => !OURS.has(e?.url ?? '') && !fromPayer.has(e?.url),
  );
  const contained = meta.adaptive?.questionnaire;
  const intendedUse = meta.intendedUse ?? 'withorder';
  let items = normaliseOrigins(Array.isArray(response['item']) ? (response['item'] as ResponseNode[]) : [], version);
  if (items.length === 0 && version !== '2.2') {
    // 2.0.1/2.1 require at least one item: the questionnaire's items, unanswered.
    const roots = (Array.isArray(form.questionnaire['item']) ? form.questionnaire['item'] : []) as Array<{
      linkId: string;
      text?: string;
      type?: string;
    }>;
    const answerable = roots.filter((r) => r.type !== 'display');
    items = (answerable.length > 0 ? answerable : roots).map((r) => ({
      linkId: r.linkId,
      ...(r.text ? { text: r.text } : {}),
    }));
  }
  const author = meta.author?.practitionerRole ?? meta.author?.practitioner;
  const id = meta.id ?? response.id;
  return {
    resourceType: 'QuestionnaireResponse',
    ...(id ? { id } : {}),
    meta: { profile: [QR_PROFILE] } as FhirResource['meta'],
    extension: [
      ...contextExtensions(meta, version),
      {
        url: INTENDED_USE,
        valueCodeableConcept: {
          coding: [{ system: DOC_REASON_SYSTEM[version], code: intendedUse, display: DOC_REASON_DISPLAY[intendedUse] }],
        },
      },
      ...kept,
      ...payers,
    ],
    ...(contained ? { contained: [contained] } : {}),
    questionnaire: contained ? `#${contained.id}` : meta.questionnaireCanonical,
    status,
    subject: { reference: meta.subject },
    ...(meta.encounter ? { encounter: { reference: meta.encounter } } : {}),
    authored: meta.authored,
    ...(author
      ? { author: { reference: author, ...(meta.author?.display ? { display: meta.author.display } : {}) } }
      : {}),
    item: items,
  };
}
