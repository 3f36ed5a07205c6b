import { Injectable } from '@nestjs/common';
import { type FhirResource, parseResourceReference, relativeReference } from '@dtr/fhir';
import { DtrError } from '@dtr/kernel';
import { type ChosenContext, dtrContextOf, ORDER_TYPES, type SessionRecord, SmartSessions } from '@dtr/smart';
import { contextReferences } from './forms/ehr-responses.js';
import { belongsTo } from './order-context.js';

/**
 * What the order picker offers, per resource type: the statuses of an order that may still need documentation, and
 * the search parameter naming the patient. An in-progress QuestionnaireResponse is offered to resume it.
 */
const PICKABLE: Record<string, { statuses: string[]; patientParam: 'patient' | 'subject' }> = {
  DeviceRequest: { statuses: ['active', 'draft', 'on-hold'], patientParam: 'patient' },
  ServiceRequest: { statuses: ['active', 'draft', 'on-hold'], patientParam: 'patient' },
  MedicationRequest: { statuses: ['active', 'draft', 'on-hold'], patientParam: 'patient' },
  NutritionOrder: { statuses: ['active', 'draft', 'on-hold'], patientParam: 'patient' },
  Appointment: { statuses: ['booked', 'proposed', 'pending'], patientParam: 'patient' },
  Encounter: { statuses: ['in-progress', 'planned'], patientParam: 'patient' },
  QuestionnaireResponse: { statuses: ['in-progress'], patientParam: 'subject' },
};

interface OrderCandidate {
  /** `Type/id`: what to send back as the choice. */
  reference: string;
  resourceType: string;
  status: string;
  /** What is ordered (the code's text or display), or the questionnaire a response answers. */
  description: string | null;
  /** When it was ordered, or starts. */
  date: string | null;
  /** For an in-progress QuestionnaireResponse: the order it documents (choosing it resumes the response). */
  order?: string;
}

export interface OrderCandidates {
  /** True when the launch itself named the order (or a Task naming it): there is nothing to choose. */
  orderInContext: boolean;
  /** The order chosen earlier in this session, if any. */
  chosen: ChosenContext | null;
  candidates: OrderCandidate[];
  /** Searches the EHR refused or failed (the others' candidates are still offered). */
  issues: Array<{ resourceType: string; message: string }>;
}

type Concept = { text?: string; coding?: Array<{ display?: string; code?: string }> };

function conceptText(value: unknown): string | null {
  const concept = (Array.isArray(value) ? value[0] : value) as Concept | undefined;
  if (!concept || typeof concept !== 'object') return null;
  return concept.text ?? concept.coding?.find((c) => c.display)?.display ?? concept.coding?.[0]?.code ?? null;
}

function describe(resource: FhirResource): string | null {
  const r = resource as Record<string, unknown>;
  if (resource.resourceType === 'QuestionnaireResponse')
    return typeof r['questionnaire'] === 'string' ? r['questionnaire'] : null;
  if (resource.resourceType === 'NutritionOrder')
    return conceptText((r['oralDiet'] as { type?: unknown } | undefined)?.type);
  for (const key of ['code', 'codeCodeableConcept', 'medicationCodeableConcept', 'serviceType', 'type']) {
    const text = conceptText(r[key]);
    if (text) return text;
  }
  return typeof r['description'] === 'string' ? r['description'] : null;
}

function dateOf(resource: FhirResource): string | null {
  const r = resource as Record<string, unknown>;
  for (const value of [
    r['authoredOn'],
    r['dateTime'],
    r['start'],
    (r['period'] as { start?: unknown })?.start,
    r['authored'],
  ])
    if (typeof value === 'string') return value;
  return null;
}

/** The order an in-progress response documents (its qr-context / context extension), when it names one. */
function orderOfResponse(response: FhirResource): string | undefined {
  for (const ref of contextReferences(response)) {
    const parsed = parseResourceReference(ref);
    if (parsed && ORDER_TYPES.has(parsed.type)) return relativeReference(parsed);
  }
  return undefined;
}

/**
 * The order picker: when the launch named no order, the patient's orders that may need documentation (and the
 * in-progress responses to resume), searched on the EHR with the session's `supplement` token; and the choice,
 * checked against the EHR before it is recorded on the session (sealed).
 */
@Injectable()
export class OrderCandidatesService {
  constructor(private readonly smart: SmartSessions) {}

  async candidates(session: SessionRecord): Promise<OrderCandidates> {
    const context = dtrContextOf(session.context);
    const patient = this.patientOf(session);
    const ehr = this.smart.fhirClient(session, 'supplement', { timeoutMs: 10_000, retries: 1 });
    const issues: OrderCandidates['issues'] = [];
    const found = await Promise.all(
      Object.entries(PICKABLE).map(async ([type, { statuses, patientParam }]) => {
        const value = patientParam === 'subject' ? `Patient/${patient}` : patient;
        try {
          const result = await ehr.search(type, { [patientParam]: value, status: statuses.join(',') }, { maxPages: 5 });
          return result.resources;
        } catch (error) {
          issues.push({
            resourceType: type,
            message: error instanceof DtrError ? error.message : 'the EHR search failed',
          });
          return [];
        }
      }),
    );
    const candidates: OrderCandidate[] = [];
    for (const resource of found.flat()) {
      // Only what the search should have returned: this patient's, in a status that may need documentation.
      if (!resource.id || !this.pickable(resource, patient)) continue;
      const order = resource.resourceType === 'QuestionnaireResponse' ? orderOfResponse(resource) : undefined;
      if (resource.resourceType === 'QuestionnaireResponse' && !order) continue;
      candidates.push({
        reference: `${resource.resourceType}/${resource.id}`,
        resourceType: resource.resourceType,
        status: String(resource['status']),
        description: describe(resource),
        date: dateOf(resource),
        ...(order ? { order } : {}),
      });
    }
    return {
      orderInContext: !context.orderChosen && (context.orders.length > 0 || context.tasks.length > 0),
      chosen: session.context.chosen ?? null,
      candidates,
      issues,
    };
  }

  /**
   * Records the clinician's choice once the EHR confirms it: an order (or in-progress response) the picker offers,
   * read again and checked to be this patient's and in a pickable status. Refused when the launch named the order.
   */
  async choose(session: SessionRecord, reference: unknown): Promise<{ session: SessionRecord; chosen: ChosenContext }> {
    const patient = this.patientOf(session);
    const context = dtrContextOf(session.context);
    if (!context.orderChosen && (context.orders.length > 0 || context.tasks.length > 0))
      throw new DtrError('CONFLICT', 'the launch already named the order: there is nothing to choose');
    const parsed =
      typeof reference === 'string' && reference.length <= 200 ? parseResourceReference(reference) : undefined;
    if (!parsed || parsed.base !== undefined || parsed.version !== undefined || !PICKABLE[parsed.type])
      throw new DtrError(
        'INVALID_INPUT',
        `order: a reference Type/id to one of ${Object.keys(PICKABLE).join(', ')}, as order-candidates lists them`,
        { expression: ['order'] },
      );
    const ehr = this.smart.fhirClient(session, 'supplement', { timeoutMs: 10_000, retries: 1 });
    const chosen = await this.confirmed(ehr, parsed.type, parsed.id, patient);
    let result: ChosenContext = { order: relativeReference(parsed) };
    if (parsed.type === 'QuestionnaireResponse') {
      const order = orderOfResponse(chosen);
      if (!order) throw new DtrError('CONFLICT', 'this response names no order it documents: choose the order itself');
      const [type, id] = order.split('/') as [string, string];
      await this.confirmed(ehr, type, id, patient, false);
      result = { order, questionnaireResponse: relativeReference(parsed) };
    }
    return { session: await this.smart.recordChoice(session, result), chosen: result };
  }

  /** The resource, read again from the EHR: it must exist, be this patient's and (when asked) in a pickable status. */
  private async confirmed(
    ehr: ReturnType<SmartSessions['fhirClient']>,
    type: string,
    id: string,
    patient: string,
    statusChecked = true,
  ): Promise<FhirResource> {
    const resource = await ehr.read(type, id).catch((error: unknown) => {
      // The EHR refusing the read (outside the token's patient compartment) says the same as reading it would.
      if (DtrError.is(error) && error.details['status'] === 403) return null;
      throw error;
    });
    if (resource === undefined) throw new DtrError('NOT_FOUND', `${type}/${id} is not in the EHR`);
    if (resource === null || !belongsTo(resource, patient))
      throw new DtrError('FORBIDDEN', `${type}/${id} is not an order of the patient in context`);
    if (statusChecked && !this.pickable(resource, patient))
      throw new DtrError(
        'CONFLICT',
        `${type}/${id} is ${String(resource['status'] ?? 'without status')}: only ${PICKABLE[type]!.statuses.join(', ')} ones can be chosen`,
      );
    return resource;
  }

  private pickable(resource: FhirResource, patient: string): boolean {
    const rule = PICKABLE[resource.resourceType];
    return Boolean(rule?.statuses.includes(String(resource['status']))) && belongsTo(resource, patient);
  }

  private patientOf(session: SessionRecord): string {
    if (!session.patient) throw new DtrError('CONFLICT', 'the session has no patient in context');
    return session.patient;
  }
}
