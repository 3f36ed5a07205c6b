import { describe, expect, it } from 'vitest';
import { fhirpathRegexPatterns, pageQuestionnaire, pageRisk } from './browser-rules.js';

const SDC = 'http://hl7.org/fhir/uv/sdc/StructureDefinition/';
const VARIABLE = 'http://hl7.org/fhir/StructureDefinition/variable';
const fhirpath = (expression: string, name?: string) => ({
  language: 'text/fhirpath',
  expression,
  ...(name ? { name } : {}),
});
const NOTE = "%resource.item.where(linkId = 'note').answer.value";

describe('fhirpathRegexPatterns', () => {
  it('reads the pattern literal of each regex call, with FHIRPath escapes, and null for one it cannot judge', () => {
    expect(fhirpathRegexPatterns(`${NOTE}.matches('^(a+)+$')`)).toEqual(['^(a+)+$']);
    expect(fhirpathRegexPatterns(`${NOTE}.replaceMatches('\\\\d+\\'', 'x')`)).toEqual(["\\d+'"]);
    expect(fhirpathRegexPatterns(`${NOTE}.matchesFull( '\\u0041+' )`)).toEqual(['A+']);
    expect(fhirpathRegexPatterns(`${NOTE}.matches(%pattern)`)).toEqual([null]);
    expect(fhirpathRegexPatterns(`${NOTE}.matches('a' + 'b')`)).toEqual([null]);
  });

  it('ignores the names in strings, quoted identifiers and comments, and functions that are not regex calls', () => {
    expect(fhirpathRegexPatterns("'matches(x)' = `matches`.value // matches('(a+)+')\n")).toEqual([]);
    expect(fhirpathRegexPatterns("/* .matches('(a+)+') */ %a.contains('(a+)+')")).toEqual([]);
    expect(fhirpathRegexPatterns("%a.matches ('x').not() and %b.matches('y')")).toEqual(['x', 'y']);
  });

  it('pageRisk says why, quoting the pattern', () => {
    expect(pageRisk(`${NOTE}.matches('^(a+)+$')`)).toBe(
      'its regular expression /^(a+)+$/ may backtrack without end: a repeated part repeats inside itself (nested quantifiers)',
    );
    expect(pageRisk(`${NOTE}.matches(%p)`)).toBe('its regular expression is not a literal the server can judge');
    expect(pageRisk(`${NOTE}.matches('^[A-Z]{2}\\\\d{6}$')`)).toBeUndefined();
  });
});

describe('pageQuestionnaire', () => {
  const questionnaire = {
    resourceType: 'Questionnaire',
    extension: [
      { url: VARIABLE, valueExpression: fhirpath(`${NOTE}.matches('^(a|ab)*$')`, 'noteOk') },
      { url: VARIABLE, valueExpression: fhirpath(`${NOTE}.count()`, 'notes') },
      { url: 'http://example.org/other', valueString: 'kept' },
    ],
    item: [
      { linkId: 'note', type: 'string' },
      {
        linkId: 'group',
        type: 'group',
        item: [
          {
            linkId: 'note-ok',
            type: 'boolean',
            extension: [{ url: `${SDC}sdc-questionnaire-calculatedExpression`, valueExpression: fhirpath('%noteOk') }],
          },
          {
            linkId: 'detail',
            type: 'string',
            extension: [
              {
                url: `${SDC}sdc-questionnaire-enableWhenExpression`,
                valueExpression: fhirpath(`${NOTE}.matches('^(a+)+$')`),
              },
            ],
          },
          {
            linkId: 'count',
            type: 'integer',
            extension: [
              { url: `${SDC}sdc-questionnaire-calculatedExpression`, valueExpression: fhirpath('%notes') },
              {
                url: `${SDC}sdc-questionnaire-initialExpression`,
                valueExpression: { language: 'text/cql', expression: "matches('(a+)+')" },
              },
            ],
          },
        ],
      },
    ],
  };

  it('takes out what the page cannot run safely, and what uses it, and lists each with its reason', () => {
    const before = JSON.stringify(questionnaire);
    const { questionnaire: page, serverOnly } = pageQuestionnaire(questionnaire);
    expect(JSON.stringify(questionnaire)).toBe(before);
    expect(serverOnly).toEqual([
      {
        kind: 'variable',
        name: 'noteOk',
        reason: expect.stringContaining('/^(a|ab)*$/ may backtrack without end'),
      },
      { linkId: 'note-ok', kind: 'calculatedExpression', reason: 'it uses %noteOk, which the server evaluates' },
      {
        linkId: 'detail',
        kind: 'enableWhenExpression',
        reason: expect.stringContaining('nested quantifiers'),
      },
    ]);
    expect(page.extension.map((e) => e.url)).toEqual([VARIABLE, 'http://example.org/other']);
    const [noteOk, detail, count] = page.item[1]!.item!;
    expect(noteOk!.extension).toEqual([]);
    expect(detail!.extension).toEqual([]);
    // A safe expression, and one in another language (the page does not run CQL), are left as they are.
    expect(count).toEqual(questionnaire.item[1]!.item![2]);
  });

  it('leaves a questionnaire without risky expressions unchanged', () => {
    const plain = { resourceType: 'Questionnaire', item: [questionnaire.item[0], questionnaire.item[1]!.item![2]] };
    expect(pageQuestionnaire(plain)).toEqual({ questionnaire: plain, serverOnly: [] });
  });
});
