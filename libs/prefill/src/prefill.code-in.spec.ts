import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type FhirResource, HttpFhirClient, QuestionnairePackage, translateCql } from '@dtr/fhir';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FhirClientReader } from './fhir-client-reader.js';
import { BundleReader } from './patient-data-reader.js';
import { PrefillEngine, type PrefillRequest } from './prefill.engine.js';

const VALUE_SET = 'http://example.org/dtr/ValueSet/copd';
const CQL = `library CodeInCheck version '1.0.0'
using FHIR version '4.0.1'
valueset "COPD": '${VALUE_SET}'
context Patient
define "COPD Conditions": [Condition: "COPD"]
define "Has COPD": exists "COPD Conditions"
`;

const valueSet = {
  resourceType: 'ValueSet',
  url: VALUE_SET,
  status: 'active',
  expansion: {
    contains: [
      { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'J44.9' },
      { system: 'http://snomed.info/sct', code: '13645005' },
    ],
  },
} as FhirResource;
const questionnaire = {
  resourceType: 'Questionnaire',
  url: 'http://example.org/dtr/Questionnaire/code-in',
  extension: [
    {
      url: 'http://hl7.org/fhir/StructureDefinition/cqf-library',
      valueCanonical: 'http://example.org/dtr/Library/CodeInCheck|1.0.0',
    },
  ],
  item: [
    {
      linkId: 'copd',
      type: 'boolean',
      extension: [
        {
          url: 'http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression',
          valueExpression: { language: 'text/cql', expression: '"CodeInCheck"."Has COPD"' },
        },
      ],
    },
  ],
} as unknown as FhirResource;
const patientData = [
  { resourceType: 'Patient', id: 'p1' },
  {
    resourceType: 'Condition',
    id: 'copd',
    subject: { reference: 'Patient/p1' },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '13645005' }] },
  },
  {
    resourceType: 'Condition',
    id: 'other',
    subject: { reference: 'Patient/p1' },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '44054006' }] },
  },
] as FhirResource[];

describe('code:in searches for value set retrieves', () => {
  let pkg: QuestionnairePackage;
  beforeAll(async () => {
    const translated = await translateCql(CQL);
    expect(translated.errors).toEqual([]);
    const library = {
      resourceType: 'Library',
      url: 'http://example.org/dtr/Library/CodeInCheck',
      version: '1.0.0',
      name: 'CodeInCheck',
      content: [{ contentType: 'application/elm+json', data: Buffer.from(translated.elm!).toString('base64') }],
    } as FhirResource;
    pkg = QuestionnairePackage.fromResources([questionnaire, library, valueSet]);
  });
  const request = (codeIn: boolean): PrefillRequest => ({
    pkg,
    questionnaire,
    patientId: 'p1',
    igVersion: '2.2',
    codeIn,
    now: new Date('2026-11-22T12:00:00Z'),
  });
  const answer = (qr: FhirResource) =>
    (qr['item'] as Array<{ answer: Array<{ valueBoolean?: boolean }> }>)[0]?.answer[0]?.valueBoolean;

  it('names the value set in one code:in search when the EHR expands it; answers equal the listed-codes search', async () => {
    const reader = new BundleReader(patientData, { valueSets: [valueSet] });
    const withCodeIn = await new PrefillEngine(reader).run(request(true));
    expect(reader.searches).toEqual([{ resourceType: 'Condition', params: { patient: 'p1', 'code:in': VALUE_SET } }]);
    const listedReader = new BundleReader(patientData);
    const listed = await new PrefillEngine(listedReader).run(request(false));
    expect(listedReader.searches).toEqual([
      {
        resourceType: 'Condition',
        params: { patient: 'p1', code: 'http://hl7.org/fhir/sid/icd-10-cm|J44.9,http://snomed.info/sct|13645005' },
      },
    ]);
    expect(withCodeIn.questionnaireResponse).toEqual(listed.questionnaireResponse);
    expect(answer(withCodeIn.questionnaireResponse)).toBe(true);
    expect(withCodeIn.issues).toEqual([]);
  });

  it('an EHR that refuses code:in gets the codes listed, with an information issue, and the same answer', async () => {
    const reader = new BundleReader(patientData);
    const result = await new PrefillEngine(reader).run(request(true));
    expect(reader.searches.map((s) => Object.keys(s.params).sort().join('+'))).toEqual([
      'code:in+patient',
      'code+patient',
    ]);
    expect(result.issues).toEqual([expect.objectContaining({ severity: 'information', code: 'code-in-unsupported' })]);
    expect(answer(result.questionnaireResponse)).toBe(true);
  });

  describe('over HTTP, an EHR that answers 400 to the modifier', () => {
    let server: Server;
    const seen: string[] = [];
    beforeAll(async () => {
      server = createServer((req, res) => {
        const url = new URL(req.url ?? '/', 'http://localhost');
        seen.push(`${url.pathname}?${[...url.searchParams.keys()].sort().join('&')}`);
        res.setHeader('content-type', 'application/fhir+json');
        if (url.searchParams.has('code:in')) {
          res.statusCode = 400;
          res.end(
            JSON.stringify({
              resourceType: 'OperationOutcome',
              issue: [{ severity: 'error', code: 'not-supported', diagnostics: 'modifier :in is not supported' }],
            }),
          );
          return;
        }
        if (url.pathname === '/fhir/Patient/p1') return void res.end(JSON.stringify(patientData[0]));
        const entry = patientData.filter((r) => r.resourceType === 'Condition').map((resource) => ({ resource }));
        res.end(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry }));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    });
    afterAll(() => server?.close());

    it('is asked once; later prefills list the codes straight away', async () => {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
      const client = () => new HttpFhirClient({ baseUrl: base, accessToken: async () => 'ehr-token', retries: 0 });
      const first = await new PrefillEngine(new FhirClientReader(client())).run(request(true));
      expect(first.issues.map((i) => i.code)).toEqual(['code-in-unsupported']);
      expect(answer(first.questionnaireResponse)).toBe(true);
      const second = await new PrefillEngine(new FhirClientReader(client())).run(request(true));
      expect(answer(second.questionnaireResponse)).toBe(true);
      expect(seen.filter((s) => s.includes('code:in'))).toHaveLength(1);
      expect(seen.filter((s) => s === '/fhir/Condition?code&patient')).toHaveLength(2);
    });
  });
});
