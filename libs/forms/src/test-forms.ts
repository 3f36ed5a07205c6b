import type { FhirResource } from '@dtr/fhir';
import { INFORMATION_ORIGIN } from '@dtr/prefill';
import type { FormAuthor, FormDefinition, FormIgVersion, ResponseMeta } from './form.types.js';

/** A small questionnaire with one item of each kind the rules judge, for the unit specs. */

const CALCULATED = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression';
const answerOf = (linkId: string) => `%resource.repeat(item).where(linkId='${linkId}').answer.value`;

export const QUESTIONNAIRE: FhirResource = {
  resourceType: 'Questionnaire',
  id: 'oxygen-form',
  url: 'http://example.org/dtr/Questionnaire/oxygen-form',
  version: '3.0.0',
  title: 'Home oxygen form',
  status: 'active',
  contained: [
    {
      resourceType: 'ValueSet',
      id: 'severity',
      status: 'active',
      expansion: {
        contains: [
          { system: 'http://example.org/severity', code: 'mild', display: 'Mild' },
          { system: 'http://example.org/severity', code: 'severe', display: 'Severe' },
        ],
      },
    },
  ],
  item: [
    { linkId: 'intro', text: 'Answer for the patient being ordered oxygen.', type: 'display' },
    { linkId: 'name', text: 'Patient name', type: 'string', required: true, maxLength: 20 },
    { linkId: 'smoker', text: 'Current smoker', type: 'boolean' },
    {
      linkId: 'packs',
      text: 'Packs per day',
      type: 'integer',
      required: true,
      enableWhen: [{ question: 'smoker', operator: '=', answerBoolean: true }],
    },
    { linkId: 'weight', text: 'Weight change (kg)', type: 'decimal' },
    { linkId: 'dob', text: 'Date of birth', type: 'date' },
    { linkId: 'seen', text: 'Last seen', type: 'dateTime' },
    { linkId: 'dose-time', text: 'Dose time', type: 'time' },
    { linkId: 'notes', text: 'Notes', type: 'text' },
    { linkId: 'site', text: 'Supplier web site', type: 'url' },
    {
      linkId: 'route',
      text: 'Route',
      type: 'choice',
      answerOption: [
        { valueCoding: { system: 'http://example.org/route', code: 'nasal', display: 'Nasal cannula' } },
        { valueCoding: { system: 'http://example.org/route', code: 'mask', display: 'Face mask' } },
      ],
    },
    { linkId: 'severity', text: 'Severity', type: 'choice', answerValueSet: '#severity' },
    {
      linkId: 'device',
      text: 'Delivery device',
      type: 'open-choice',
      answerValueSet: 'http://example.org/dtr/ValueSet/device|1.0.0',
    },
    {
      linkId: 'shift',
      text: 'Shift',
      type: 'choice',
      answerOption: [{ valueString: 'day' }, { valueString: 'night' }],
    },
    {
      linkId: 'flow',
      text: 'Flow rate',
      type: 'quantity',
      extension: [
        {
          url: 'http://hl7.org/fhir/StructureDefinition/questionnaire-unitOption',
          valueCoding: { system: 'http://unitsofmeasure.org', code: 'L/min', display: 'L/min' },
        },
      ],
    },
    {
      linkId: 'orderer',
      text: 'Ordering practitioner',
      type: 'reference',
      extension: [
        { url: 'http://hl7.org/fhir/StructureDefinition/questionnaire-referenceResource', valueCode: 'Practitioner' },
      ],
    },
    { linkId: 'report', text: 'Oximetry report', type: 'attachment' },
    { linkId: 'allergies', text: 'Allergies', type: 'string', repeats: true },
    {
      linkId: 'vitals',
      text: 'Vitals',
      type: 'group',
      item: [
        { linkId: 'height', text: 'Height (m)', type: 'decimal' },
        { linkId: 'mass', text: 'Mass (kg)', type: 'decimal' },
        {
          linkId: 'bmi',
          text: 'Body mass index',
          type: 'decimal',
          readOnly: true,
          extension: [
            {
              url: CALCULATED,
              valueExpression: {
                language: 'text/fhirpath',
                expression: `(${answerOf('mass')} / (${answerOf('height')} * ${answerOf('height')})).round(1)`,
              },
            },
          ],
        },
      ],
    },
    { linkId: 'mrn', text: 'Medical record number', type: 'string', readOnly: true },
    {
      linkId: 'plan-id',
      text: 'Payer plan id',
      type: 'string',
      initial: [{ valueString: 'PLAN-7' }],
      extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/questionnaire-hidden', valueBoolean: true }],
    },
    { linkId: 'consent', text: 'Consent recorded', type: 'boolean', initial: [{ valueBoolean: true }] },
    {
      linkId: 'visits',
      text: 'Visits',
      type: 'group',
      repeats: true,
      item: [{ linkId: 'visit-date', text: 'Visit date', type: 'date', required: true }],
    },
  ],
};

const DEVICE_VALUE_SET: FhirResource = {
  resourceType: 'ValueSet',
  url: 'http://example.org/dtr/ValueSet/device',
  version: '1.0.0',
  status: 'active',
  compose: {
    include: [{ system: 'http://example.org/device', concept: [{ code: 'concentrator' }, { code: 'cylinder' }] }],
  },
};

export function origin(code: string, practitioner?: string): Record<string, unknown> {
  return {
    url: INFORMATION_ORIGIN,
    extension: [
      { url: 'source', valueCode: code },
      ...(practitioner
        ? [{ url: 'author', extension: [{ url: 'practitioner', valueReference: { reference: practitioner } }] }]
        : []),
    ],
  };
}

/** The prefill the engine would give: name, route, vitals and the record number from the EHR. */
function prefillFor(version: FormIgVersion): FhirResource {
  const auto = version === '2.2' ? 'auto-client' : 'auto';
  return {
    resourceType: 'QuestionnaireResponse',
    questionnaire: 'http://example.org/dtr/Questionnaire/oxygen-form|3.0.0',
    status: 'in-progress',
    item: [
      { linkId: 'name', text: 'Patient name', answer: [{ valueString: 'Ann Lee', extension: [origin(auto)] }] },
      {
        linkId: 'route',
        answer: [
          {
            valueCoding: { system: 'http://example.org/route', code: 'nasal', display: 'Nasal cannula' },
            extension: [origin(auto)],
          },
        ],
      },
      {
        linkId: 'vitals',
        item: [
          { linkId: 'height', answer: [{ valueDecimal: 1.8, extension: [origin(auto)] }] },
          { linkId: 'mass', answer: [{ valueDecimal: 81, extension: [origin(auto)] }] },
          { linkId: 'bmi', answer: [{ valueDecimal: 25, extension: [origin(auto)] }] },
        ],
      },
      { linkId: 'mrn', answer: [{ valueString: 'MRN-0042', extension: [origin(auto)] }] },
    ],
  };
}

export function formFor(version: FormIgVersion = '2.2', questionnaire: FhirResource = QUESTIONNAIRE): FormDefinition {
  return { questionnaire, valueSets: [DEVICE_VALUE_SET], igVersion: version, prefill: prefillFor(version) };
}

export const DR_LEE: FormAuthor = {
  practitioner: 'Practitioner/dr-lee',
  practitionerRole: 'PractitionerRole/dr-lee-pulmonology',
  display: 'Dr Lee',
};

export const META: ResponseMeta = {
  subject: 'Patient/p1',
  author: DR_LEE,
  authored: '2026-12-05T10:00:00Z',
  orders: ['DeviceRequest/dr1'],
  coverage: ['Coverage/cov1'],
  questionnaireCanonical: 'http://example.org/dtr/Questionnaire/oxygen-form|3.0.0',
};

type Page = Record<string, unknown> & { item: Array<Record<string, unknown>> };

/** An editable copy of a response, as the page would send it back. */
export const editable = (response: FhirResource): Page => structuredClone(response) as unknown as Page;

/** The page's copy of the prefill: what it sends back when the clinician changed nothing. */
export const pageCopy = (version: FormIgVersion = '2.2'): Page => editable(prefillFor(version));

type Node = { linkId: string; answer?: Array<Record<string, unknown>>; item?: Node[] };

/** Every item with this linkId in a response. */
export function itemsWith(response: FhirResource | Record<string, unknown>, linkId: string): Node[] {
  const found: Node[] = [];
  const walk = (items: Node[] = []) => {
    for (const item of items) {
      if (item.linkId === linkId) found.push(item);
      walk(item.item);
      for (const a of item.answer ?? []) walk(a['item'] as Node[] | undefined);
    }
  };
  walk(response['item'] as Node[]);
  return found;
}

/** The values of an item's answers, without their extensions. */
export const valuesOf = (response: FhirResource | Record<string, unknown>, linkId: string) =>
  itemsWith(response, linkId).flatMap((i) => (i.answer ?? []).map(({ extension: _e, ...v }) => v));

/** The source code and author of each answer of an item. */
export function originsOf(response: FhirResource | Record<string, unknown>, linkId: string) {
  return itemsWith(response, linkId).flatMap((i) =>
    (i.answer ?? []).map((a) => {
      const ext = (a['extension'] as Array<{ url: string; extension: Array<Record<string, unknown>> }>).find(
        (e) => e.url === INFORMATION_ORIGIN,
      )!;
      const source = ext.extension.find((e) => e['url'] === 'source')!['valueCode'];
      const author = ext.extension.find((e) => e['url'] === 'author') as
        { extension: Array<{ url: string; valueReference?: { reference: string } }> } | undefined;
      return {
        source,
        author: author?.extension.find((e) => e.url === 'practitioner')?.valueReference?.reference,
      };
    }),
  );
}

/** Sets the answers of the (first) item with this linkId in a page copy, creating it at the root when absent. */
export function answer(qr: { item: Array<Record<string, unknown>> }, linkId: string, answers: unknown[]): void {
  const found = itemsWith(qr as unknown as FhirResource, linkId)[0];
  if (found) found.answer = answers as Array<Record<string, unknown>>;
  else qr.item.push({ linkId, answer: answers });
}
