import type { FhirResource, QuestionnairePackage } from '@dtr/fhir';
import type { ItemShape } from './answers.js';
import { expansionOf } from './cql-runtime.js';
import { applyEnableWhen } from './enable-when.js';
import { populate } from './sdc-population.js';
import { INFORMATION_ORIGIN, type PrefillIssue, type PrefillRequest, type PrefillResult } from './prefill.types.js';

interface QItem extends ItemShape {
  linkId: string;
  answerValueSet?: string;
}

export interface AssemblyInput {
  request: PrefillRequest & { now: Date };
  pkg: QuestionnairePackage;
  patient: FhirResource | undefined;
  env: Record<string, unknown>;
  /** The CQL value answering an expression kind of an item, when one was evaluated. */
  cql: (kind: string, linkId: string) => { value: unknown } | undefined;
  issues: PrefillIssue[];
}

/** The information-origin extension every prefilled answer carries (`auto-client` in 2.2, `auto` before). */
function originExtension(request: PrefillRequest) {
  return {
    url: INFORMATION_ORIGIN,
    extension: [
      { url: 'source', valueCode: request.igVersion === '2.2' ? 'auto-client' : 'auto' },
      ...(request.user
        ? [{ url: 'author', extension: [{ url: 'practitioner', valueReference: { reference: request.user } }] }]
        : []),
    ],
  };
}

/** Choice items bound to a value set (contained `#id` or a package canonical): its codes act as the options. */
function optionsFor(questionnaire: FhirResource, pkg: QuestionnairePackage) {
  const contained = (questionnaire['contained'] as FhirResource[] | undefined) ?? [];
  return (item: QItem): ItemShape => {
    if (item.answerOption || !item.answerValueSet) return item;
    const vs = item.answerValueSet.startsWith('#')
      ? contained.find((r) => r.resourceType === 'ValueSet' && r.id === item.answerValueSet!.slice(1))
      : pkg.valueSetByUrl(item.answerValueSet);
    const codes = vs ? expansionOf(vs) : undefined;
    if (!codes) return item;
    return {
      ...item,
      answerOption: codes.map((c) => ({ valueCoding: { ...(c.system ? { system: c.system } : {}), code: c.code } })),
    };
  };
}

/**
 * SDC population (initial values, candidates, context, repeating-group contexts, calculated values to a steady
 * state), then the items enableWhen / enableWhenExpression disable left out; the QuestionnaireResponse of the DTR
 * profile, every answer tagged with its origin.
 */
export function assembleResponse(
  input: AssemblyInput,
): Pick<PrefillResult, 'questionnaireResponse' | 'options' | 'answerContext'> {
  const { request, pkg, patient, issues } = input;
  const { questionnaire } = request;
  const population = patient
    ? populate({
        questionnaire,
        env: input.env,
        cql: input.cql,
        optionsFor: optionsFor(questionnaire, pkg),
        origin: originExtension(request),
      })
    : { items: [], options: {}, answerContext: {}, env: input.env, issues: [] };
  issues.push(...population.issues);
  const enablement = applyEnableWhen(questionnaire, population.items, population.env);
  if (enablement.cycle)
    issues.push({
      severity: 'warning',
      code: 'enablewhen-cycle',
      message: 'enableWhen conditions do not settle; check the questionnaire',
    });
  for (const failure of enablement.failures)
    issues.push({
      severity: 'warning',
      code: 'expression-failed',
      message: `enableWhenExpression: ${failure.message}`,
      linkId: failure.linkId,
    });
  return {
    questionnaireResponse: responseOf(request, enablement.items),
    options: population.options,
    answerContext: population.answerContext,
  };
}

function responseOf(request: PrefillRequest & { now: Date }, items: unknown[]): FhirResource {
  const { questionnaire } = request;
  const url = typeof questionnaire['url'] === 'string' ? questionnaire['url'] : `Questionnaire/${questionnaire.id}`;
  const version = typeof questionnaire['version'] === 'string' ? `|${questionnaire['version']}` : '';
  const contextUrl =
    request.igVersion === '2.2'
      ? 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context'
      : 'http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/context';
  return {
    resourceType: 'QuestionnaireResponse',
    meta: {
      profile: ['http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-questionnaireresponse'],
    } as FhirResource['meta'],
    ...(request.order || request.coverage
      ? {
          extension: [request.order, request.coverage]
            .filter(Boolean)
            .map((reference) => ({ url: contextUrl, valueReference: { reference } })),
        }
      : {}),
    questionnaire: `${url}${version}`,
    status: 'in-progress',
    subject: { reference: `Patient/${request.patientId}` },
    authored: request.now.toISOString(),
    ...(request.user ? { author: { reference: request.user } } : {}),
    item: items,
  };
}
