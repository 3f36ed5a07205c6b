import { type FhirResource, parseResourceReference, relativeReference } from '@dtr/fhir';

/**
 * Deciding what is sensitive, conservatively on purpose: flagging too much costs the clinician a click, missing one
 * discloses what should not leave. A resource is sensitive when its security labels carry a restricted or very
 * restricted confidentiality (R, V) or any label of the v3 ActCode / ActReason systems (the sensitivity codes the
 * data segmentation guidance uses: ETH, HIV, PSY, SUD, SDV, SEX..., and the handling caveats such as "no
 * redisclosure"), or when an active Consent denies disclosure to this payer and covers it.
 * @see https://hl7.org/fhir/uv/security-label-ds4p/
 */
const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const SENSITIVITY_SYSTEMS = new Set([
  'http://terminology.hl7.org/CodeSystem/v3-ActCode',
  'http://terminology.hl7.org/CodeSystem/v3-ActReason',
  'http://hl7.org/fhir/v3/ActCode',
  'urn:oid:2.16.840.1.113883.5.4',
]);

export interface SecurityLabel {
  system?: string;
  code?: string;
}

/** A resource an answer may have been drawn from, as the prefill recorded it (no content, only what decides). */
export interface AnswerSource {
  /** `Type/id`. */
  reference: string;
  labels?: SecurityLabel[];
}

/** The labels of a resource that make it sensitive (empty: not sensitive by its labels). */
export function sensitiveLabels(labels: SecurityLabel[] | undefined): string[] {
  const found: string[] = [];
  for (const label of labels ?? []) {
    const code = label.code ?? '';
    if (label.system === CONFIDENTIALITY && (code === 'R' || code === 'V')) found.push(`confidentiality ${code}`);
    else if (label.system && SENSITIVITY_SYSTEMS.has(label.system) && code) found.push(code);
  }
  return found;
}

/** The payer as a Consent would name it. */
export interface ConsentRecipient {
  /** `Organization/x` references the EHR uses for this payer (the coverage's payor). */
  references: string[];
  /** `system|value` identifiers of the payer. */
  identifiers: string[];
}

/** What the active Consents deny this payer: everything, or these references, types and labels. */
export interface ConsentRestriction {
  all: boolean;
  references: Set<string>;
  types: Set<string>;
  labels: Set<string>;
  /** Consent ids that restrict (for the reasons shown to the clinician). */
  consents: string[];
}

interface Provision {
  type?: string;
  actor?: Array<{ reference?: { reference?: string; identifier?: { system?: string; value?: string } } }>;
  data?: Array<{ reference?: { reference?: string } }>;
  class?: Array<{ code?: string }>;
  securityLabel?: SecurityLabel[];
  code?: unknown[];
  provision?: Provision[];
}

function actorMatches(provision: Provision, recipient: ConsentRecipient): boolean {
  // A deny without actors denies everyone, this payer included.
  if (!provision.actor || provision.actor.length === 0) return true;
  return provision.actor.some((a) => {
    const ref = a.reference?.reference;
    const parsed = ref ? parseResourceReference(ref) : undefined;
    if (parsed && recipient.references.includes(relativeReference(parsed))) return true;
    const id = a.reference?.identifier;
    return Boolean(id?.value && recipient.identifiers.includes(`${id.system ?? ''}|${id.value}`));
  });
}

/** Collects the deny provisions (at any depth) of the active Consents that apply to this payer. */
export function consentRestriction(consents: FhirResource[], recipient: ConsentRecipient): ConsentRestriction {
  const restriction: ConsentRestriction = {
    all: false,
    references: new Set(),
    types: new Set(),
    labels: new Set(),
    consents: [],
  };
  for (const consent of consents) {
    if (consent.resourceType !== 'Consent' || consent['status'] !== 'active') continue;
    let restricts = false;
    const visit = (provision: Provision | undefined, inheritedDeny: boolean) => {
      if (!provision) return;
      const deny = provision.type === 'deny' || (provision.type === undefined && inheritedDeny);
      if (deny && actorMatches(provision, recipient)) {
        restricts = true;
        const data = (provision.data ?? []).map((d) => parseResourceReference(d.reference?.reference));
        const classes = (provision.class ?? []).map((c) => c.code).filter((c): c is string => Boolean(c));
        const labels = (provision.securityLabel ?? []).map((l) => l.code).filter((c): c is string => Boolean(c));
        // Restrictions by code are not matched here: conservatively, such a deny covers everything.
        if (data.length === 0 && classes.length === 0 && labels.length === 0) restriction.all = true;
        if ((provision.code ?? []).length > 0) restriction.all = true;
        for (const d of data) if (d) restriction.references.add(relativeReference(d));
        for (const c of classes) restriction.types.add(c);
        for (const l of labels) restriction.labels.add(l);
      }
      for (const nested of provision.provision ?? []) visit(nested, false);
    };
    visit(consent['provision'] as Provision | undefined, false);
    if (restricts) restriction.consents.push(consent.id ?? '(no id)');
  }
  return restriction;
}

/** Why one source is sensitive for this payer (empty: it is not). */
export function sourceReasons(source: AnswerSource, restriction: ConsentRestriction): string[] {
  const reasons = sensitiveLabels(source.labels).map((l) => `labelled ${l}`);
  const type = source.reference.split('/')[0] ?? '';
  const denied =
    restriction.all ||
    restriction.references.has(source.reference) ||
    restriction.types.has(type) ||
    (source.labels ?? []).some((l) => l.code && restriction.labels.has(l.code));
  if (denied) reasons.push('a Consent restricts its disclosure to this payer');
  return reasons;
}
