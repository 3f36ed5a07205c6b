import type { FhirResource } from '@dtr/fhir';
import { expansionOf } from '@dtr/prefill';
import type { FormProblem } from './form.types.js';
import {
  type Answer,
  hasUrl,
  type ItemDefinition,
  MAX_SIZE,
  MIME_TYPE,
  REFERENCE_RESOURCE,
  UNIT,
  UNIT_OPTION,
  valueEntry,
  valueKey,
} from './questionnaire-items.js';

/**
 * One answer checked against its item: the value[x] its type allows, the answer set (answerOption, a contained or
 * package answerValueSet, or the prefill's candidateExpression options), maxLength, units, reference types,
 * attachment size and type. Returns the answer as it will be stored (a chosen coding is the form's own coding, so a
 * page cannot relabel a code with another display) or a problem.
 * @see https://hl7.org/fhir/R4/questionnaireresponse.html#8.29.4 (answer types by item type)
 */

/** value[x] allowed per item type (R4 Questionnaire item type → QuestionnaireResponse answer value[x]). */
const VALUE_KEYS: Record<string, string[]> = {
  boolean: ['valueBoolean'],
  decimal: ['valueDecimal'],
  integer: ['valueInteger'],
  date: ['valueDate'],
  dateTime: ['valueDateTime'],
  time: ['valueTime'],
  string: ['valueString'],
  text: ['valueString'],
  url: ['valueUri'],
  choice: ['valueCoding', 'valueString', 'valueInteger', 'valueDate', 'valueTime', 'valueReference'],
  'open-choice': ['valueCoding', 'valueString', 'valueInteger', 'valueDate', 'valueTime', 'valueReference'],
  quantity: ['valueQuantity'],
  reference: ['valueReference'],
  attachment: ['valueAttachment'],
};

const TYPE_WORDS: Record<string, string> = {
  boolean: 'yes or no',
  decimal: 'a number',
  integer: 'a whole number',
  date: 'a date (YYYY, YYYY-MM or YYYY-MM-DD)',
  dateTime: 'a date and time',
  time: 'a time (hh:mm:ss)',
  string: 'text',
  text: 'text',
  url: 'a web address (http or https)',
  choice: 'one of the listed choices',
  'open-choice': 'one of the listed choices or text',
  quantity: 'a quantity with a number',
  reference: 'a reference to a record',
  attachment: 'a file',
};

const DATE = /^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$/;
const DATE_TIME =
  /^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$/;
const TIME = /^([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?$/;
const RELATIVE_REFERENCE =
  /^[A-Z][A-Za-z]{1,63}\/(?!\.+(?:\/|$))[A-Za-z0-9\-.]{1,64}(\/_history\/(?!\.+(?:\/|$))[A-Za-z0-9\-.]{1,64})?$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const MIME = /^[a-z]+\/[a-z0-9.+\-]+(;.*)?$/i;
const INT32 = 2 ** 31;
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/;

export interface AnswerSets {
  questionnaire: FhirResource;
  valueSets: FhirResource[];
  options?: Record<string, Array<Record<string, unknown>>>;
}

type Coding = { system?: string; code?: string; display?: string };

/** The answers a choice item accepts, or undefined when the form gives no checkable set. */
function answerSetOf(definition: ItemDefinition, sets: AnswerSets): Array<Record<string, unknown>> | undefined {
  if (Array.isArray(definition.answerOption) && definition.answerOption.length > 0)
    return definition.answerOption.map((o) => {
      const entry = valueEntry(o);
      return entry ? { [entry[0]]: entry[1] } : {};
    });
  if (typeof definition.answerValueSet === 'string') {
    const reference = definition.answerValueSet;
    let valueSet: FhirResource | undefined;
    if (reference.startsWith('#')) {
      const contained = Array.isArray(sets.questionnaire['contained'])
        ? (sets.questionnaire['contained'] as FhirResource[])
        : [];
      valueSet = contained.find((r) => r?.resourceType === 'ValueSet' && r.id === reference.slice(1));
    } else {
      const [url, version] = reference.split('|');
      valueSet = sets.valueSets.find(
        (v) => v['url'] === url && (version === undefined || v['version'] === undefined || v['version'] === version),
      );
    }
    const codes = valueSet ? expansionOf(valueSet) : undefined;
    if (!codes) return undefined;
    const displays = new Map<string, string>();
    const contains = (valueSet?.['expansion'] as { contains?: Coding[] } | undefined)?.contains ?? [];
    const stack: Array<Coding & { contains?: Coding[] }> = [...contains];
    while (stack.length > 0) {
      const c = stack.pop()!;
      if (c.code && c.display) displays.set(`${c.system ?? ''}|${c.code}`, c.display);
      if (Array.isArray(c.contains)) stack.push(...c.contains);
    }
    return codes.map((c) => {
      const display = displays.get(`${c.system ?? ''}|${c.code}`);
      return {
        valueCoding: { ...(c.system ? { system: c.system } : {}), code: c.code, ...(display ? { display } : {}) },
      };
    });
  }
  const offered = sets.options?.[definition.linkId];
  return offered && offered.length > 0 ? offered.map((o) => ({ ...o, extension: undefined })) : undefined;
}

/** The option matching a submitted coding: same code, and same system when both name one. */
function matchCoding(coding: Coding, set: Array<Record<string, unknown>>): Record<string, unknown> | undefined {
  return set.find((o) => {
    const c = o['valueCoding'] as Coding | undefined;
    return c !== undefined && c.code === coding.code && (!c.system || !coding.system || c.system === coding.system);
  });
}

const label = (d: ItemDefinition): string => (d.text ? `"${d.text.slice(0, 120)}"` : `item ${d.linkId}`);

export function checkAnswer(
  definition: ItemDefinition,
  answer: Answer,
  sets: AnswerSets,
): { answer: Answer } | { problem: FormProblem } {
  const problem = (code: FormProblem['code'], message: string) => ({
    problem: { linkId: definition.linkId, code, message: `${label(definition)}: ${message}` },
  });
  const values = Object.keys(answer).filter((k) => k.startsWith('value'));
  const allowed = VALUE_KEYS[definition.type];
  if (!allowed) return problem('wrong-type', `a ${definition.type} item takes no answer`);
  const wanted = TYPE_WORDS[definition.type] ?? definition.type;
  if (values.length !== 1 || !allowed.includes(values[0]!))
    return problem('wrong-type', `the answer must be ${wanted}`);
  const key = values[0]!;
  const value = answer[key];
  const keep = (v: unknown): { answer: Answer } => ({
    answer: { [key]: v, ...(answer.item ? { item: answer.item } : {}) } as Answer,
  });
  const maxLength = typeof definition.maxLength === 'number' ? definition.maxLength : undefined;
  const tooLong = (text: string) =>
    maxLength !== undefined && [...text].length > maxLength
      ? problem('too-long', `the answer is longer than the ${maxLength} characters allowed`)
      : undefined;

  switch (definition.type) {
    case 'boolean':
      return typeof value === 'boolean' ? keep(value) : problem('wrong-type', `the answer must be ${wanted}`);
    case 'decimal':
      return typeof value === 'number' && Number.isFinite(value)
        ? keep(value)
        : problem('wrong-type', `the answer must be ${wanted}`);
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value) && value >= -INT32 && value < INT32
        ? keep(value)
        : problem('wrong-type', `the answer must be ${wanted}`);
    case 'date':
      return typeof value === 'string' && DATE.test(value) && realDate(value)
        ? keep(value)
        : problem('wrong-type', `the answer must be ${wanted}`);
    case 'dateTime':
      return typeof value === 'string' && DATE_TIME.test(value) && realDate(value.slice(0, 10))
        ? keep(value)
        : problem('wrong-type', `the answer must be ${wanted}`);
    case 'time':
      return typeof value === 'string' && TIME.test(value)
        ? keep(value)
        : problem('wrong-type', `the answer must be ${wanted}`);
    case 'string':
    case 'text':
      if (typeof value !== 'string') return problem('wrong-type', `the answer must be ${wanted}`);
      if (value.trim() === '') return problem('invalid-value', 'the answer is empty');
      // FHIR strings: no control characters other than tab, carriage return and line feed.
      if (CONTROL.test(value)) return problem('invalid-value', 'the answer contains characters that are not allowed');
      return tooLong(value) ?? keep(value);
    case 'url':
      if (typeof value !== 'string' || !webAddress(value)) return problem('wrong-type', `the answer must be ${wanted}`);
      return tooLong(value) ?? keep(value);
    case 'quantity':
      return checkQuantity(definition, value, keep, problem);
    case 'reference':
      return checkReference(definition, value, keep, problem);
    case 'attachment':
      return checkAttachment(definition, value, keep, problem);
    default:
      return checkChoice(definition, key, value, sets, keep, problem, tooLong);
  }
}

type Keep = (v: unknown) => { answer: Answer };
type Problem = (code: FormProblem['code'], message: string) => { problem: FormProblem };

function checkChoice(
  definition: ItemDefinition,
  key: string,
  value: unknown,
  sets: AnswerSets,
  keep: Keep,
  problem: Problem,
  tooLong: (text: string) => { problem: FormProblem } | undefined,
): { answer: Answer } | { problem: FormProblem } {
  const open = definition.type === 'open-choice';
  const set = answerSetOf(definition, sets);
  if (key === 'valueCoding') {
    const coding = value as Coding;
    if (!coding || typeof coding !== 'object' || typeof coding.code !== 'string' || coding.code === '')
      return problem('wrong-type', 'the answer must be one of the listed choices');
    if (!set)
      return keep({
        ...(coding.system ? { system: coding.system } : {}),
        code: coding.code,
        ...(coding.display ? { display: coding.display } : {}),
      });
    const option = matchCoding(coding, set);
    return option
      ? keep(option['valueCoding'])
      : problem('not-in-answer-set', 'the answer is not one of the listed choices');
  }
  if (open && key === 'valueString') {
    if (typeof value !== 'string' || value.trim() === '')
      return problem('wrong-type', 'the answer must be a choice or text');
    return tooLong(value) ?? keep(value);
  }
  if (!set) return problem('wrong-type', 'the answer must be one of the listed choices');
  const wanted = valueKey({ [key]: value });
  return set.some((o) => valueKey(o) === wanted)
    ? keep(value)
    : problem('not-in-answer-set', 'the answer is not one of the listed choices');
}

function checkQuantity(
  definition: ItemDefinition,
  value: unknown,
  keep: Keep,
  problem: Problem,
): { answer: Answer } | { problem: FormProblem } {
  const q = value as { value?: unknown; unit?: unknown; system?: unknown; code?: unknown; comparator?: unknown };
  if (!q || typeof q !== 'object' || typeof q.value !== 'number' || !Number.isFinite(q.value))
    return problem('wrong-type', 'the answer must be a quantity with a number');
  for (const k of ['unit', 'system', 'code'] as const)
    if (q[k] !== undefined && typeof q[k] !== 'string')
      return problem('wrong-type', 'the unit of the quantity is not valid');
  const units = (definition.extension ?? [])
    .filter((e) => hasUrl(e, UNIT_OPTION) || hasUrl(e, UNIT))
    .map((e) => e['valueCoding'] as Coding | undefined)
    .filter((c): c is Coding => !!c?.code);
  const clean = {
    value: q.value,
    ...(typeof q.unit === 'string' ? { unit: q.unit } : {}),
    ...(typeof q.system === 'string' ? { system: q.system } : {}),
    ...(typeof q.code === 'string' ? { code: q.code } : {}),
  };
  if (units.length === 0) return keep(clean);
  const unit = units.find(
    (u) =>
      (q.code === u.code && (!u.system || !q.system || q.system === u.system)) ||
      (q.code === undefined && (q.unit === u.code || (u.display !== undefined && q.unit === u.display))),
  );
  if (!unit)
    return problem('invalid-value', `the unit must be one of: ${units.map((u) => u.display ?? u.code).join(', ')}`);
  return keep({
    value: q.value,
    unit: unit.display ?? unit.code,
    ...(unit.system ? { system: unit.system } : {}),
    code: unit.code,
  });
}

function checkReference(
  definition: ItemDefinition,
  value: unknown,
  keep: Keep,
  problem: Problem,
): { answer: Answer } | { problem: FormProblem } {
  const r = value as { reference?: unknown; display?: unknown };
  if (!r || typeof r !== 'object' || typeof r.reference !== 'string')
    return problem('wrong-type', 'the answer must be a reference to a record');
  const reference = r.reference;
  const relative = RELATIVE_REFERENCE.test(reference);
  if (!relative && !(webAddress(reference) && /\/[A-Z][A-Za-z]+\/(?!\.+(?:\/|$))[A-Za-z0-9\-.]{1,64}$/.test(reference)))
    return problem('wrong-type', 'the answer must be a reference to a record');
  const types = (definition.extension ?? [])
    .filter((e) => hasUrl(e, REFERENCE_RESOURCE))
    .map((e) => e['valueCode'])
    .filter((t): t is string => typeof t === 'string');
  const type = relative ? reference.split('/')[0]! : reference.split('/').slice(-2)[0]!;
  if (types.length > 0 && !types.includes(type))
    return problem('invalid-value', `the answer must refer to a ${types.join(' or ')} record`);
  return keep({ reference, ...(typeof r.display === 'string' ? { display: r.display.slice(0, 500) } : {}) });
}

function checkAttachment(
  definition: ItemDefinition,
  value: unknown,
  keep: Keep,
  problem: Problem,
): { answer: Answer } | { problem: FormProblem } {
  const a = value as Record<string, unknown>;
  if (!a || typeof a !== 'object') return problem('wrong-type', 'the answer must be a file');
  const { contentType, data, url, title, size, creation, language } = a;
  if (data === undefined && url === undefined) return problem('wrong-type', 'the answer must be a file');
  if (data !== undefined && (typeof data !== 'string' || !BASE64.test(data) || data.length % 4 !== 0))
    return problem('invalid-value', 'the file content is not valid');
  if (url !== undefined && (typeof url !== 'string' || !webAddress(url)))
    return problem('invalid-value', 'the file address is not a web address');
  if (contentType !== undefined && (typeof contentType !== 'string' || !MIME.test(contentType)))
    return problem('invalid-value', 'the file type is not valid');
  if (data !== undefined && typeof contentType !== 'string')
    return problem('invalid-value', 'the file type is missing');
  const mimeTypes = (definition.extension ?? [])
    .filter((e) => hasUrl(e, MIME_TYPE))
    .map((e) => e['valueCode'])
    .filter((t): t is string => typeof t === 'string');
  if (
    mimeTypes.length > 0 &&
    (typeof contentType !== 'string' || !mimeTypes.includes(contentType.split(';')[0]!.trim()))
  )
    return problem('invalid-value', `the file must be of type ${mimeTypes.join(' or ')}`);
  const maxSize = (definition.extension ?? []).find((e) => hasUrl(e, MAX_SIZE))?.['valueDecimal'];
  const bytes = typeof data === 'string' ? Math.floor((data.length * 3) / 4) - (data.match(/=+$/)?.[0].length ?? 0) : 0;
  if (typeof maxSize === 'number' && bytes > maxSize)
    return problem('too-long', `the file is larger than the ${maxSize} bytes allowed`);
  return keep({
    ...(typeof contentType === 'string' ? { contentType } : {}),
    ...(typeof language === 'string' ? { language } : {}),
    ...(typeof data === 'string' ? { data, size: bytes } : typeof size === 'number' ? { size } : {}),
    ...(typeof url === 'string' ? { url } : {}),
    ...(typeof title === 'string' ? { title: title.slice(0, 500) } : {}),
    ...(typeof creation === 'string' && DATE_TIME.test(creation) ? { creation } : {}),
  });
}

function webAddress(text: string): boolean {
  try {
    const url = new URL(text);
    return url.protocol === 'https:' || url.protocol === 'http:';
  } catch {
    return false;
  }
}

/** A calendar date that exists (no 31 April, 29 February only in leap years); partial dates pass. */
function realDate(text: string): boolean {
  const [y, m, d] = text.split('-').map(Number);
  if (m === undefined || d === undefined || Number.isNaN(d)) return true;
  const date = new Date(Date.UTC(y!, m - 1, d));
  return date.getUTCMonth() === m - 1 && date.getUTCDate() === d;
}
