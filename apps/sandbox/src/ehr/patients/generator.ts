import { readFileSync } from 'node:fs';
import type { Resource } from '../fhir/fhir-store.js';

/** A small deterministic PRNG (mulberry32): the same seed gives the same patients on every machine. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const GIVEN = ['Ana', 'Ben', 'Chloe', 'Dev', 'Elena', 'Farid', 'Grace', 'Hiro', 'Ines', 'Jonah', 'Kemi', 'Luis'];
const FAMILY = ['Rivera', 'Okafor', 'Nguyen', 'Schmidt', 'Haddad', 'Kowalski', 'Tanaka', 'Mensah', 'Olsen', 'Patel'];
const CITIES = [
  ['Springfield', 'IL', '62701'],
  ['Madison', 'WI', '53703'],
  ['Salem', 'OR', '97301'],
  ['Dover', 'DE', '19901'],
] as const;

const CONDITIONS = [
  { system: 'http://snomed.info/sct', code: '389087006', display: 'Hypoxemia' },
  { system: 'http://snomed.info/sct', code: '13645005', display: 'Chronic obstructive lung disease' },
  { system: 'http://snomed.info/sct', code: '73430006', display: 'Sleep apnea' },
  {
    system: 'http://hl7.org/fhir/sid/icd-10-cm',
    code: 'J44.9',
    display: 'Chronic obstructive pulmonary disease, unspecified',
  },
];
const ORDERS = [
  {
    kind: 'DeviceRequest',
    system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs',
    code: 'E0424',
    display: 'Stationary compressed gaseous oxygen system, rental',
  },
  {
    kind: 'DeviceRequest',
    system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs',
    code: 'E0601',
    display: 'Continuous positive airway pressure (CPAP) device',
  },
  { kind: 'ServiceRequest', system: 'http://snomed.info/sct', code: '57485005', display: 'Oxygen therapy' },
  {
    kind: 'MedicationRequest',
    system: 'http://www.nlm.nih.gov/research/umls/rxnorm',
    code: '745752',
    display: 'Albuterol 0.09 MG/ACTUAT metered dose inhaler',
  },
];
/** Payer identifier the sandbox payer is registered under (see the README's payer registration). */
const SANDBOX_PAYER_IDENTIFIER = { system: 'http://example.org/payer-id', value: 'SANDBOX-PAYER' };
/** Payer identifier of the second sandbox payer (a patient with coverage at both). */
const SECOND_PAYER_IDENTIFIER = { system: 'http://example.org/payer-id', value: 'SANDBOX-PAYER-2' };
/** @see https://hl7.org/fhir/us/davinci-crd/StructureDefinition-ext-coverage-information.html */
const COVERAGE_INFORMATION = 'http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information';

/**
 * Synthetic, US Core shaped patients, deterministic from the seed: Patient (MRN), Organization (payer), Coverage,
 * Practitioner (NPI) + PractitionerRole, Encounter, Conditions, Observations (SpO2, pO2; some entered-in-error),
 * and one or two orders each (DeviceRequest, ServiceRequest or MedicationRequest). Some resources carry security
 * labels (restricted, HIV, substance use) so disclosure rules can be exercised. All references resolve.
 */
/** The seeded random draws every generator step shares (their order is part of the determinism). */
interface Draw {
  random: () => number;
  pick: <T>(list: readonly T[]) => T;
  date: (fromYear: number, toYear: number) => string;
}

export function generatePatients(options: { seed: number; count: number }): Resource[] {
  const random = prng(options.seed);
  const draw: Draw = {
    random,
    pick: <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!,
    date: (fromYear: number, toYear: number) => {
      const year = fromYear + Math.floor(random() * (toYear - fromYear + 1));
      const month = 1 + Math.floor(random() * 12);
      const day = 1 + Math.floor(random() * 28);
      return `${year}-${String(month).padStart(2, '0')}-${String(day).padStart(2, '0')}`;
    },
  };
  const { resources, practitioners } = organizations(draw);
  for (let n = 1; n <= options.count; n++) {
    const pid = `pat-${String(n).padStart(3, '0')}`;
    const given = draw.pick(GIVEN);
    const family = draw.pick(FAMILY);
    const [city, state, zip] = draw.pick(CITIES);
    const practitioner = draw.pick(practitioners);
    const encounter = `enc-${pid}`;
    resources.push(...patientRecord(draw, { pid, given, family, city, state, zip, practitioner, encounter }));
    resources.push(...conditions(draw, pid), ...observations(draw, pid));
    resources.push(...orders(draw, n, pid, encounter, practitioner));
  }
  return resources;
}

/** The payer and clinic Organizations, three Practitioners with their roles. */
function organizations(draw: Draw): { resources: Resource[]; practitioners: string[] } {
  const { pick } = draw;
  const resources: Resource[] = [
    {
      resourceType: 'Organization',
      id: 'org-payer',
      name: 'Sandbox Health Plan',
      identifier: [SANDBOX_PAYER_IDENTIFIER],
    },
    {
      resourceType: 'Organization',
      id: 'org-clinic',
      name: 'Sandbox Pulmonary Clinic',
      identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567893' }],
    },
  ];
  const practitioners = [0, 1, 2].map((i) => {
    const id = `pr-${i + 1}`;
    resources.push({
      resourceType: 'Practitioner',
      id,
      identifier: [
        { system: 'http://hl7.org/fhir/sid/us-npi', value: String(1111111110 + i * 111111111).slice(0, 10) },
      ],
      name: [{ given: [pick(GIVEN)], family: pick(FAMILY), prefix: ['Dr.'] }],
    });
    resources.push({
      resourceType: 'PractitionerRole',
      id: `role-${i + 1}`,
      practitioner: { reference: `Practitioner/${id}` },
      organization: { reference: 'Organization/org-clinic' },
    });
    return id;
  });
  return { resources, practitioners };
}

interface PatientFacts {
  pid: string;
  given: string;
  family: string;
  city: string;
  state: string;
  zip: string;
  practitioner: string;
  encounter: string;
}

/** Patient (MRN), Coverage with the sandbox payer, an ambulatory Encounter. */
function patientRecord(draw: Draw, f: PatientFacts): Resource[] {
  const { random, date } = draw;
  const { pid, given, family, city, state, zip, practitioner, encounter } = f;
  const resources: Resource[] = [];
  resources.push({
    resourceType: 'Patient',
    id: pid,
    meta: { profile: ['http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient'] },
    identifier: [
      {
        type: {
          coding: [
            { system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR', display: 'Medical record number' },
          ],
        },
        system: 'urn:oid:2.16.840.1.113883.3.0.1',
        value: `MRN${String(100000 + Math.floor(random() * 900000))}`,
      },
    ],
    active: true,
    name: [{ use: 'official', given: [given], family }],
    gender: random() < 0.5 ? 'female' : 'male',
    birthDate: date(1938, 1975),
    telecom: [{ system: 'phone', value: `555-01${String(Math.floor(random() * 100)).padStart(2, '0')}`, use: 'home' }],
    address: [{ line: [`${1 + Math.floor(random() * 900)} Main St`], city, state, postalCode: zip, country: 'US' }],
  });
  resources.push({
    resourceType: 'Coverage',
    id: `cov-${pid}`,
    status: 'active',
    subscriberId: `SUB${String(Math.floor(random() * 1e8)).padStart(8, '0')}`,
    beneficiary: { reference: `Patient/${pid}` },
    relationship: {
      coding: [{ system: 'http://terminology.hl7.org/CodeSystem/subscriber-relationship', code: 'self' }],
    },
    payor: [{ reference: 'Organization/org-payer', identifier: SANDBOX_PAYER_IDENTIFIER }],
    class: [
      {
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/coverage-class', code: 'plan' }] },
        value: 'PLAN-A',
        name: 'Sandbox Plan A',
      },
    ],
  });
  resources.push({
    resourceType: 'Encounter',
    id: encounter,
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
    subject: { reference: `Patient/${pid}` },
    participant: [{ individual: { reference: `Practitioner/${practitioner}` } }],
    period: { start: `${date(2026, 2026)}T09:00:00Z` },
  });
  return resources;
}

/** One to three Conditions, a fifth of them labelled restricted and HIV, PSY or SUD. */
function conditions(draw: Draw, pid: string): Resource[] {
  const { random, pick, date } = draw;
  const resources: Resource[] = [];
  const conditionCount = 1 + Math.floor(random() * 3);
  for (let c = 0; c < conditionCount; c++) {
    const code = pick(CONDITIONS);
    const sensitive = random() < 0.2;
    resources.push({
      resourceType: 'Condition',
      id: `cond-${pid}-${c + 1}`,
      ...(sensitive
        ? {
            meta: {
              security: [
                { system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' },
                { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: pick(['HIV', 'PSY', 'SUD']) },
              ],
            },
          }
        : {}),
      clinicalStatus: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }],
      },
      category: [
        {
          coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'problem-list-item' }],
        },
      ],
      code: { coding: [code], text: code.display },
      subject: { reference: `Patient/${pid}` },
      recordedDate: date(2019, 2026),
    });
  }
  return resources;
}

/** Three SpO2 or pO2 Observations, some entered-in-error. */
function observations(draw: Draw, pid: string): Resource[] {
  const { random, date } = draw;
  const resources: Resource[] = [];
  for (let o = 0; o < 3; o++) {
    const spo2 = random() < 0.5;
    resources.push({
      resourceType: 'Observation',
      id: `obs-${pid}-${o + 1}`,
      status: random() < 0.1 ? 'entered-in-error' : 'final',
      category: [
        {
          coding: [
            {
              system: 'http://terminology.hl7.org/CodeSystem/observation-category',
              code: spo2 ? 'vital-signs' : 'laboratory',
            },
          ],
        },
      ],
      code: spo2
        ? {
            coding: [
              {
                system: 'http://loinc.org',
                code: '59408-5',
                display: 'Oxygen saturation in Arterial blood by Pulse oximetry',
              },
              { system: 'http://loinc.org', code: '2708-6' },
            ],
          }
        : {
            coding: [
              { system: 'http://loinc.org', code: '2703-7', display: 'Oxygen [Partial pressure] in Arterial blood' },
            ],
          },
      subject: { reference: `Patient/${pid}` },
      effectiveDateTime: `${date(2023, 2026)}T10:00:00Z`,
      valueQuantity: spo2
        ? { value: 84 + Math.floor(random() * 12), unit: '%', system: 'http://unitsofmeasure.org', code: '%' }
        : {
            value: 50 + Math.floor(random() * 30),
            unit: 'mm[Hg]',
            system: 'http://unitsofmeasure.org',
            code: 'mm[Hg]',
          },
    });
  }
  return resources;
}

/** One or two orders (DeviceRequest, ServiceRequest or MedicationRequest); odd patients' first is the home-oxygen one. */
function orders(draw: Draw, n: number, pid: string, encounter: string, practitioner: string): Resource[] {
  const { random, pick, date } = draw;
  const resources: Resource[] = [];
  const orderCount = 1 + Math.floor(random() * 2);
  for (let o = 0; o < orderCount; o++) {
    const order = o === 0 ? ORDERS[n % 2 === 1 ? 0 : Math.floor(random() * ORDERS.length)]! : pick(ORDERS);
    const id = `${order.kind === 'DeviceRequest' ? 'dr' : order.kind === 'ServiceRequest' ? 'sr' : 'mr'}-${pid}-${o + 1}`;
    const common = {
      id,
      status: 'active',
      intent: 'order',
      subject: { reference: `Patient/${pid}` },
      encounter: { reference: `Encounter/${encounter}` },
      authoredOn: date(2026, 2026),
      requester: { reference: `Practitioner/${practitioner}` },
      insurance: [{ reference: `Coverage/cov-${pid}` }],
    };
    const concept = {
      coding: [{ system: order.system, code: order.code, display: order.display }],
      text: order.display,
    };
    resources.push(
      order.kind === 'DeviceRequest'
        ? { resourceType: 'DeviceRequest', ...common, codeCodeableConcept: concept }
        : order.kind === 'ServiceRequest'
          ? { resourceType: 'ServiceRequest', ...common, code: concept }
          : { resourceType: 'MedicationRequest', ...common, medicationCodeableConcept: concept },
    );
  }
  return resources;
}

/** A CRD coverage-information extension naming a coverage and its coverage-assertion id. */
function coverageInformation(coverage: string, assertionId: string) {
  return {
    url: COVERAGE_INFORMATION,
    extension: [
      { url: 'coverage', valueReference: { reference: coverage } },
      { url: 'covered', valueCode: 'conditional' },
      { url: 'doc-needed', valueCode: 'clinical' },
      { url: 'date', valueDate: '2026-11-02' },
      { url: 'coverage-assertion-id', valueString: assertionId },
    ],
  };
}

function activeCoverage(id: string, pid: string, payor: string, identifier: { system: string; value: string }) {
  return {
    resourceType: 'Coverage',
    id,
    status: 'active',
    beneficiary: { reference: `Patient/${pid}` },
    payor: [{ reference: `Organization/${payor}`, identifier }],
  };
}

/**
 * A fixed patient (`pat-two-payers`, not drawn from the seed) covered by two payers: the sandbox payer and the second
 * sandbox payer (organisation `org-payer-2`). Her home-oxygen order carries CRD coverage-information for both
 * coverages, each with its own coverage-assertion id; an in-progress Encounter and a booked Appointment are also
 * offered by the order picker. With the second payer registered, one `$questionnaire-package` goes to each payer.
 */
export function twoPayerPatient(): Resource[] {
  const pid = 'pat-two-payers';
  return [
    {
      resourceType: 'Organization',
      id: 'org-payer-2',
      name: 'Second Sandbox Health Plan',
      identifier: [SECOND_PAYER_IDENTIFIER],
    },
    {
      resourceType: 'Patient',
      id: pid,
      active: true,
      name: [{ use: 'official', given: ['Tomas'], family: 'Duarte' }],
      gender: 'male',
      birthDate: '1946-05-17',
    },
    activeCoverage('cov-two-payers-1', pid, 'org-payer', SANDBOX_PAYER_IDENTIFIER),
    activeCoverage('cov-two-payers-2', pid, 'org-payer-2', SECOND_PAYER_IDENTIFIER),
    {
      resourceType: 'Condition',
      id: `cond-${pid}-1`,
      clinicalStatus: {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }],
      },
      code: { coding: [CONDITIONS[0]!], text: CONDITIONS[0]!.display },
      subject: { reference: `Patient/${pid}` },
      recordedDate: '2025-03-02',
    },
    {
      resourceType: 'Encounter',
      id: `enc-${pid}`,
      status: 'in-progress',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
      // The encounter itself may be what needs documentation (DTR: Encounter as the order).
      type: [{ coding: [{ system: 'http://snomed.info/sct', code: '57485005' }], text: 'Oxygen therapy visit' }],
      subject: { reference: `Patient/${pid}` },
      period: { start: '2026-11-02T09:00:00Z' },
    },
    {
      resourceType: 'Appointment',
      id: `appt-${pid}`,
      status: 'booked',
      serviceType: [
        { coding: [{ system: 'http://snomed.info/sct', code: '57485005' }], text: 'Oxygen titration visit' },
      ],
      start: '2026-11-20T10:00:00Z',
      participant: [{ actor: { reference: `Patient/${pid}` }, status: 'accepted' }],
    },
    {
      resourceType: 'DeviceRequest',
      id: `dr-${pid}-1`,
      extension: [
        coverageInformation('Coverage/cov-two-payers-1', 'CRD-ASSERT-P1'),
        coverageInformation('Coverage/cov-two-payers-2', 'CRD-ASSERT-P2'),
      ],
      status: 'active',
      intent: 'order',
      subject: { reference: `Patient/${pid}` },
      encounter: { reference: `Encounter/enc-${pid}` },
      authoredOn: '2026-11-02',
      codeCodeableConcept: {
        coding: [{ system: ORDERS[0]!.system, code: ORDERS[0]!.code, display: ORDERS[0]!.display }],
        text: ORDERS[0]!.display,
      },
    },
  ];
}

/**
 * Resources of FHIR Bundle files (e.g. ../shared/corpus/patients/*.json, read where they are), with `urn:uuid:` and
 * other fullUrl references rewritten to `Type/id` as a server would store them.
 */
export function loadBundleFiles(paths: string[]): Resource[] {
  const out: Resource[] = [];
  for (const file of paths) {
    const bundle = JSON.parse(readFileSync(file, 'utf8')) as {
      resourceType?: string;
      entry?: Array<{ fullUrl?: string; resource?: Resource }>;
    };
    if (bundle.resourceType !== 'Bundle') throw new Error(`${file} is not a FHIR Bundle`);
    const entries = (bundle.entry ?? []).filter((e): e is { fullUrl?: string; resource: Resource } =>
      Boolean(e.resource?.id),
    );
    const byFullUrl = new Map(
      entries.filter((e) => e.fullUrl).map((e) => [e.fullUrl!, `${e.resource.resourceType}/${e.resource.id}`]),
    );
    const patients = entries.filter((e) => e.resource.resourceType === 'Patient');
    const only = patients.length === 1 ? `Patient/${patients[0]!.resource.id}` : undefined;
    const rewrite = (value: unknown, parent?: string): unknown => {
      if (Array.isArray(value)) return value.map((v) => rewrite(v, parent));
      if (value && typeof value === 'object') {
        return Object.fromEntries(
          Object.entries(value).map(([k, v]) => [
            k,
            k === 'reference' && typeof v === 'string' && (byFullUrl.has(v) || v.startsWith('urn:uuid:'))
              ? (byFullUrl.get(v) ?? (only && ['subject', 'patient', 'beneficiary'].includes(parent ?? '') ? only : v))
              : rewrite(v, k),
          ]),
        );
      }
      return value;
    };
    for (const e of entries) out.push(rewrite(e.resource) as Resource);
  }
  return out;
}
