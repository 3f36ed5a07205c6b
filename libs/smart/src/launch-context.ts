// Launch context from a SMART token response, in every shape EHRs send it.
// @see https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#launch-context-arrives-with-your-access_token
import { isFhirId, parseResourceReference } from '@dtr/fhir';

interface FhirContextItem {
  /** Relative or absolute literal reference, e.g. `DeviceRequest/123`. */
  reference?: string;
  /** Canonical URL (e.g. a Questionnaire), possibly with `|version`. */
  canonical?: string;
  identifier?: { system?: string; value?: string };
  /** Resource type, given or derived from the reference. */
  type?: string;
  role?: string;
}

export interface LaunchContext {
  patient?: string;
  encounter?: string;
  fhirContext: FhirContextItem[];
  needPatientBanner?: boolean;
  intent?: string;
  tenant?: string;
  smartStyleUrl?: string;
  /** Legacy DTR launchers: `appContext` of `order=…&coverage=…&response=…` (or JSON). */
  appContext?: { orders: string[]; coverage?: string; response?: string; raw: string };
  /**
   * What the clinician chose in the order picker when the launch named no order (checked against the EHR first):
   * the order, and the in-progress response to resume when that was the choice. Stored sealed with the session.
   */
  chosen?: ChosenContext;
}

export interface ChosenContext {
  order: string;
  questionnaireResponse?: string;
}

/** Context items grouped the way DTR uses them. */
export interface DtrContext {
  orders: string[];
  /** Tasks in fhirContext: their `focus` and `basedOn` name the order(s). */
  tasks: string[];
  /** True when the order is the clinician's choice in the order picker, not the launch's. */
  orderChosen: boolean;
  coverages: string[];
  questionnaireResponses: string[];
  questionnaires: string[];
  /** CRD coverage-assertion id or PAS TRN, when the launch carried one. */
  coverageAssertion?: string;
}

export const ORDER_TYPES = new Set([
  'DeviceRequest',
  'ServiceRequest',
  'MedicationRequest',
  'NutritionOrder',
  'VisionPrescription',
  'CommunicationRequest',
  'Appointment',
  'Encounter',
]);

function typeOf(reference: string): string | undefined {
  return parseResourceReference(reference)?.type;
}

function asString(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

/**
 * Parses the context fields of a token response. Unknown fields are ignored; malformed ones are dropped
 * rather than trusted (ids are checked against the FHIR id grammar).
 */
export function parseLaunchContext(response: Record<string, unknown>): LaunchContext {
  const context: LaunchContext = { fhirContext: [] };
  const patient = asString(response['patient']);
  if (patient && isFhirId(patient)) context.patient = patient;
  const encounter = asString(response['encounter']);
  if (encounter && isFhirId(encounter)) context.encounter = encounter;
  if (typeof response['need_patient_banner'] === 'boolean') context.needPatientBanner = response['need_patient_banner'];
  const intent = asString(response['intent']);
  if (intent) context.intent = intent;
  const tenant = asString(response['tenant']);
  if (tenant) context.tenant = tenant;
  const style = asString(response['smart_style_url']);
  if (style) context.smartStyleUrl = style;

  const raw = response['fhirContext'];
  if (Array.isArray(raw)) {
    for (const entry of raw) {
      if (typeof entry === 'string') {
        // SMART 2.0: plain relative references.
        const type = typeOf(entry);
        if (type) context.fhirContext.push({ reference: entry, type });
      } else if (entry && typeof entry === 'object') {
        // SMART 2.1+: { reference | canonical | identifier, type?, role? }.
        const item = entry as Record<string, unknown>;
        const parsed: FhirContextItem = {};
        const reference = asString(item['reference']);
        const canonical = asString(item['canonical']);
        if (reference && typeOf(reference)) parsed.reference = reference;
        if (canonical && /^https?:\/\//.test(canonical)) parsed.canonical = canonical;
        const identifier = item['identifier'];
        if (identifier && typeof identifier === 'object') {
          const { system, value } = identifier as Record<string, unknown>;
          parsed.identifier = {
            ...(asString(system) ? { system: system as string } : {}),
            ...(asString(value) ? { value: value as string } : {}),
          };
        }
        const type = asString(item['type']) ?? (parsed.reference ? typeOf(parsed.reference) : undefined);
        if (type) parsed.type = type;
        const role = asString(item['role']);
        if (role) parsed.role = role;
        if (parsed.reference || parsed.canonical || parsed.identifier?.value) context.fhirContext.push(parsed);
      }
    }
  }

  const appContext = asString(response['appContext']);
  if (appContext) context.appContext = parseAppContext(appContext);
  return context;
}

/** Legacy `appContext`: `order=DeviceRequest/1&coverage=Coverage/2&response=QuestionnaireResponse/3`, or JSON. */
function parseAppContext(raw: string): NonNullable<LaunchContext['appContext']> {
  const result: NonNullable<LaunchContext['appContext']> = { orders: [], raw };
  let pairs: Array<[string, string]> = [];
  const trimmed = raw.trim();
  if (trimmed.startsWith('{')) {
    try {
      const json = JSON.parse(trimmed) as Record<string, unknown>;
      for (const [key, value] of Object.entries(json)) {
        for (const v of Array.isArray(value) ? value : [value]) if (typeof v === 'string') pairs.push([key, v]);
      }
    } catch {
      pairs = [];
    }
  } else {
    pairs = [...new URLSearchParams(trimmed)];
  }
  for (const [key, value] of pairs) {
    for (const part of value
      .split(',')
      .map((v) => v.trim())
      .filter(Boolean)) {
      if (!typeOf(part)) continue;
      if (key === 'order' || key === 'orders') result.orders.push(part);
      else if (key === 'coverage') result.coverage ??= part;
      else if (key === 'response') result.response ??= part;
    }
  }
  return result;
}

/** What DTR needs from the context: orders, coverages, an in-progress response, questionnaires. */
export function dtrContextOf(context: LaunchContext): DtrContext {
  const dtr: DtrContext = {
    orders: [],
    tasks: [],
    orderChosen: false,
    coverages: [],
    questionnaireResponses: [],
    questionnaires: [],
  };
  const add = (list: string[], value: string) => {
    if (!list.includes(value)) list.push(value);
  };
  const encounters: string[] = [];
  for (const item of context.fhirContext) {
    if (item.canonical && (item.type === 'Questionnaire' || item.type === undefined))
      add(dtr.questionnaires, item.canonical);
    if (!item.reference) {
      if (item.identifier?.value && (item.role === 'coverage-assertion' || item.type === 'Claim')) {
        dtr.coverageAssertion ??= item.identifier.value;
      }
      continue;
    }
    const type = item.type ?? typeOf(item.reference);
    if (type === 'Coverage') add(dtr.coverages, item.reference);
    else if (type === 'QuestionnaireResponse') add(dtr.questionnaireResponses, item.reference);
    else if (type === 'Task') add(dtr.tasks, item.reference);
    else if (type === 'Encounter') add(encounters, item.reference);
    else if (type && ORDER_TYPES.has(type)) add(dtr.orders, item.reference);
  }
  if (context.appContext) {
    for (const order of context.appContext.orders) add(dtr.orders, order);
    if (context.appContext.coverage) add(dtr.coverages, context.appContext.coverage);
    if (context.appContext.response) add(dtr.questionnaireResponses, context.appContext.response);
  }
  // An Encounter in fhirContext is the visit the launch happens in; it is the order itself only when nothing else is.
  if (dtr.orders.length === 0 && dtr.tasks.length === 0) for (const e of encounters) add(dtr.orders, e);
  if (dtr.orders.length === 0 && dtr.tasks.length === 0 && context.chosen && typeOf(context.chosen.order)) {
    add(dtr.orders, context.chosen.order);
    dtr.orderChosen = true;
    if (context.chosen.questionnaireResponse) add(dtr.questionnaireResponses, context.chosen.questionnaireResponse);
  }
  return dtr;
}
