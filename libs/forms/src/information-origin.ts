import { INFORMATION_ORIGIN } from '@dtr/prefill';
import type { FormAuthor, FormIgVersion, Origin } from './form.types.js';
import type { Answer } from './questionnaire-items.js';

/**
 * The information-origin extension on an answer, per IG version. 2.0.1 and 2.1 have one automatic code, `auto`;
 * 2.2 has `auto-client` (the DTR client's CQL/FHIRPath) and `auto-server` (the payer). dtrx-1: an author SHALL be
 * given on `override` and `manual`, and is prohibited otherwise. The author holds `practitioner` (a Practitioner
 * reference) and `role` (CodeableConcept); a PractitionerRole reference has no place here (it goes to the QR's author).
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/StructureDefinition-information-origin.html
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2/StructureDefinition-information-origin.html (2.0.1, `auto`)
 */

export type StoredOrigin = Origin | 'auto';

/** The code an origin takes in a version (`auto-client`/`auto-server` → `auto` before 2.2; `auto` → `auto-client` in 2.2). */
function originCode(origin: StoredOrigin, version: FormIgVersion): StoredOrigin {
  if (version !== '2.2') return origin === 'auto-client' || origin === 'auto-server' ? 'auto' : origin;
  return origin === 'auto' ? 'auto-client' : origin;
}

export const isAutomatic = (origin: StoredOrigin | undefined): boolean =>
  origin === 'auto' || origin === 'auto-client' || origin === 'auto-server';

export function originExtension(
  origin: StoredOrigin,
  version: FormIgVersion,
  author: FormAuthor | undefined,
): Record<string, unknown> {
  const code = originCode(origin, version);
  const parts: Array<Record<string, unknown>> = [];
  if (!isAutomatic(code) && author) {
    if (author.role)
      parts.push({
        url: 'role',
        valueCodeableConcept: {
          coding: [
            {
              ...(author.role.system ? { system: author.role.system } : {}),
              code: author.role.code,
              ...(author.role.display ? { display: author.role.display } : {}),
            },
          ],
        },
      });
    if (author.practitioner)
      parts.push({
        url: 'practitioner',
        valueReference: { reference: author.practitioner, ...(author.display ? { display: author.display } : {}) },
      });
  }
  return {
    url: INFORMATION_ORIGIN,
    extension: [{ url: 'source', valueCode: code }, ...(parts.length > 0 ? [{ url: 'author', extension: parts }] : [])],
  };
}

type Ext = {
  url?: string;
  valueCode?: string;
  extension?: Ext[];
  valueReference?: { reference?: string; display?: string };
} & Record<string, unknown>;

/** The origin and author recorded on an answer, when it carries an information-origin extension. */
export function readOrigin(answer: Answer): { origin: StoredOrigin; author?: FormAuthor } | undefined {
  const extensions = Array.isArray(answer['extension']) ? (answer['extension'] as Ext[]) : [];
  const origin = extensions.find((e) => e?.url === INFORMATION_ORIGIN);
  const code = origin?.extension?.find((e) => e.url === 'source')?.valueCode;
  if (code !== 'auto' && code !== 'auto-client' && code !== 'auto-server' && code !== 'override' && code !== 'manual')
    return undefined;
  const authorParts = origin?.extension?.find((e) => e.url === 'author')?.extension ?? [];
  const practitioner = authorParts.find((e) => e.url === 'practitioner')?.valueReference;
  const role = (
    authorParts.find((e) => e.url === 'role')?.['valueCodeableConcept'] as
      { coding?: Array<{ system?: string; code?: string; display?: string }> } | undefined
  )?.coding?.[0];
  const author: FormAuthor = {
    ...(practitioner?.reference ? { practitioner: practitioner.reference } : {}),
    ...(practitioner?.display ? { display: practitioner.display } : {}),
    ...(role?.code
      ? {
          role: {
            ...(role.system ? { system: role.system } : {}),
            code: role.code,
            ...(role.display ? { display: role.display } : {}),
          },
        }
      : {}),
  };
  return { origin: code, ...(Object.keys(author).length > 0 ? { author } : {}) };
}

/** The answer with exactly one information-origin extension (the one given) and no other extension from the page. */
export function withOrigin(answer: Answer, extension: Record<string, unknown>): Answer {
  const { extension: _dropped, ...rest } = answer;
  return { ...rest, extension: [extension] };
}
