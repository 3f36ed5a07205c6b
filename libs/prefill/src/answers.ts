/**
 * CQL results → QuestionnaireResponse answers, by item type. A value that does not fit the item type gives no
 * answer (and the caller records an issue) rather than a wrong one.
 * @see https://hl7.org/fhir/R4/questionnaireresponse-definitions.html#QuestionnaireResponse.item.answer.value_x_
 */
export type Answer = Record<string, unknown>;

export interface ItemShape {
  type: string;
  repeats?: boolean;
  answerOption?: Array<{
    valueCoding?: { system?: string; code?: string; display?: string };
    valueString?: string;
    valueInteger?: number;
  }>;
}

interface CqlLike {
  isDate?: boolean;
  isDateTime?: boolean;
  isTime?: boolean;
  isQuantity?: boolean;
  isCode?: boolean;
  isConcept?: boolean;
  toString(): string;
}

/** A FHIR JSON value held by a cql-exec-fhir wrapper, or the value itself. */
function unwrap(value: unknown): unknown {
  if (value && typeof value === 'object' && '_json' in value) return (value as { _json: unknown })._json;
  return value;
}

function asCoding(value: unknown): { system?: string; code?: string; display?: string } | undefined {
  const v = unwrap(value) as Record<string, unknown> | null;
  if (!v || typeof v !== 'object') return undefined;
  const cqlValue = v as CqlLike & Record<string, unknown>;
  if (cqlValue.isCode || (typeof v['code'] === 'string' && !('coding' in v))) {
    return {
      ...(typeof v['system'] === 'string' ? { system: v['system'] as string } : {}),
      code: v['code'] as string,
      ...(typeof v['display'] === 'string' ? { display: v['display'] as string } : {}),
    };
  }
  if (cqlValue.isConcept && Array.isArray(v['codes'])) return asCoding((v['codes'] as unknown[])[0]);
  if (Array.isArray(v['coding'])) return asCoding((v['coding'] as unknown[])[0]);
  return undefined;
}

function datePart(value: unknown): string | undefined {
  const v = unwrap(value);
  if (typeof v === 'string') return /^\d{4}(-\d{2}(-\d{2})?)?/.exec(v)?.[0];
  const c = v as CqlLike | null;
  if (c && (c.isDate || c.isDateTime)) return /^\d{4}(-\d{2}(-\d{2})?)?/.exec(c.toString())?.[0];
  return undefined;
}

function one(value: unknown, item: ItemShape): Answer | undefined {
  const v = unwrap(value);
  if (v === null || v === undefined) return undefined;
  switch (item.type) {
    case 'boolean':
      return typeof v === 'boolean' ? { valueBoolean: v } : undefined;
    case 'decimal':
      return typeof v === 'number'
        ? { valueDecimal: v }
        : (v as CqlLike).isQuantity
          ? { valueDecimal: (v as unknown as { value: number }).value }
          : undefined;
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v) ? { valueInteger: v } : undefined;
    case 'date': {
      const date = datePart(v);
      return date ? { valueDate: date } : undefined;
    }
    case 'dateTime': {
      if (typeof v === 'string') return { valueDateTime: v };
      const c = v as CqlLike;
      return c.isDateTime || c.isDate ? { valueDateTime: c.toString() } : undefined;
    }
    case 'time':
      return typeof v === 'string'
        ? { valueTime: v }
        : (v as CqlLike).isTime
          ? { valueTime: (v as CqlLike).toString() }
          : undefined;
    case 'string':
    case 'text': {
      if (typeof v === 'string') return { valueString: v };
      if (typeof v === 'number' || typeof v === 'boolean') return { valueString: String(v) };
      const coding = asCoding(v);
      if (coding) return { valueString: coding.display ?? coding.code };
      const c = v as CqlLike;
      if (c.isDate || c.isDateTime || c.isQuantity) return { valueString: c.toString() };
      return undefined;
    }
    case 'choice':
    case 'open-choice': {
      const coding = asCoding(v);
      const options = item.answerOption ?? [];
      if (coding) {
        const option = options.find(
          (o) =>
            o.valueCoding?.code === coding.code &&
            (!o.valueCoding?.system || !coding.system || o.valueCoding.system === coding.system),
        );
        return { valueCoding: option?.valueCoding ?? coding };
      }
      if (typeof v === 'string') {
        const option = options.find(
          (o) => o.valueCoding?.code === v || o.valueCoding?.display === v || o.valueString === v,
        );
        if (option?.valueCoding) return { valueCoding: option.valueCoding };
        if (option?.valueString !== undefined) return { valueString: option.valueString };
        return item.type === 'open-choice' ? { valueString: v } : undefined;
      }
      return undefined;
    }
    case 'quantity': {
      const q = v as { isQuantity?: boolean; value?: number; unit?: string };
      if (q.isQuantity && typeof q.value === 'number') {
        return {
          valueQuantity: {
            value: q.value,
            ...(q.unit && q.unit !== '1' ? { unit: q.unit, system: 'http://unitsofmeasure.org', code: q.unit } : {}),
          },
        };
      }
      const json = v as { value?: unknown; unit?: string; system?: string; code?: string };
      return typeof json.value === 'number' ? { valueQuantity: json } : undefined;
    }
    case 'reference': {
      const json = v as { resourceType?: string; id?: string; reference?: string };
      if (json.resourceType && json.id) return { valueReference: { reference: `${json.resourceType}/${json.id}` } };
      if (typeof json.reference === 'string') return { valueReference: { reference: json.reference } };
      return undefined;
    }
    case 'attachment': {
      const json = v as { contentType?: string; url?: string; data?: string };
      return json.contentType || json.url || json.data ? { valueAttachment: json } : undefined;
    }
    case 'url':
      return typeof v === 'string' ? { valueUri: v } : undefined;
    default:
      return undefined;
  }
}

/** Answers for an item from a CQL result (a list gives several answers when the item repeats). */
export function toAnswers(value: unknown, item: ItemShape): Answer[] {
  const list = Array.isArray(value) ? value : [value];
  const answers = list.map((v) => one(v, item)).filter((a): a is Answer => a !== undefined);
  return item.repeats ? answers : answers.slice(0, 1);
}
