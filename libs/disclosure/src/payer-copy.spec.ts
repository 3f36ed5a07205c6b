import { describe, expect, it } from 'vitest';
import type { FhirResource } from '@dtr/fhir';
import {
  answerReferences,
  DTR_QR_BUNDLE,
  pseudonymizeIds,
  questionnaireResponseBundle,
  withholdAnswers,
} from './payer-copy.js';
import { routeRequest } from './payer-routes.js';

const QR: FhirResource = {
  resourceType: 'QuestionnaireResponse',
  id: 'qr-1',
  subject: { reference: 'Patient/MRN-0042' },
  item: [
    { linkId: 'dx', answer: [{ valueReference: { reference: 'Condition/psy-1' } }] },
    { linkId: 'plain', answer: [{ valueString: 'kept' }] },
    {
      linkId: 'group',
      item: [
        {
          linkId: 'inner',
          answer: [{ valueBoolean: true, item: [{ linkId: 'deep', answer: [{ valueInteger: 3 }] }] }],
        },
      ],
    },
    { linkId: 'secret-group', item: [{ linkId: 'x', answer: [{ valueString: 'hidden' }] }] },
  ],
};

describe('payer-bound copy', () => {
  it('removes withheld items whole (question, answers, nested items), keeping the rest and the original untouched', () => {
    const copy = withholdAnswers(QR, new Set(['dx', 'deep', 'secret-group']));
    const text = JSON.stringify(copy);
    expect(text).not.toContain('psy-1');
    expect(text).not.toContain('"dx"');
    expect(text).not.toContain('hidden');
    expect(text).not.toContain('"valueInteger":3');
    expect(text).toContain('kept');
    expect((copy['item'] as Array<{ linkId: string }>).map((i) => i.linkId)).toEqual(['plain', 'group']);
    expect(JSON.stringify(QR)).toContain('psy-1');
    expect(answerReferences(QR)).toEqual(['Condition/psy-1']);
    expect(answerReferences(copy)).toEqual([]);
  });

  it('shapes the Bundle per DTR version: QR first, DTR-QRBundle profile from 2.1 on', () => {
    for (const igVersion of ['2.0.1', '2.1', '2.2'] as const) {
      const bundle = questionnaireResponseBundle({
        qr: QR,
        resources: [{ resourceType: 'Condition', id: 'psy-1' }],
        igVersion,
        submissionId: 's-1',
        now: new Date('2026-12-05T10:00:00Z'),
        fhirBase: 'https://ehr.example/fhir',
      });
      expect(bundle['type']).toBe('collection');
      const entries = bundle['entry'] as Array<{ fullUrl: string; resource: FhirResource }>;
      expect(entries.map((e) => e.resource.resourceType)).toEqual(['QuestionnaireResponse', 'Condition']);
      expect(entries[1]!.fullUrl).toBe('https://ehr.example/fhir/Condition/psy-1');
      expect(bundle['identifier']).toEqual({ system: 'urn:dtr-backend:submission', value: 's-1' });
      expect((bundle.meta as { profile?: string[] } | undefined)?.profile).toEqual(
        igVersion === '2.0.1' ? undefined : [DTR_QR_BUNDLE],
      );
    }
  });

  it('replaces ids that are business identifiers by opaque ones, consistently, and keeps the map', () => {
    const bundle = questionnaireResponseBundle({
      qr: QR,
      resources: [
        { resourceType: 'Patient', id: 'MRN-0042', identifier: [{ system: 'urn:mrn', value: 'mrn0042' }] },
        {
          resourceType: 'Coverage',
          id: 'M123456',
          subscriberId: 'M-123456',
          beneficiary: { reference: 'Patient/MRN-0042' },
        },
        { resourceType: 'Condition', id: '123-45-6789', subject: { reference: 'Patient/MRN-0042' } },
        {
          resourceType: 'Observation',
          id: 'obs-1',
          subject: { reference: 'https://ehr.example/fhir/Patient/MRN-0042' },
        },
      ],
      igVersion: '2.2',
      submissionId: 's-2',
      now: new Date(),
      fhirBase: 'https://ehr.example/fhir',
    });
    const { bundle: out, map } = pseudonymizeIds(bundle);
    const text = JSON.stringify(out);
    for (const leaked of ['MRN-0042', 'M123456', '123-45-6789']) expect(text).not.toContain(`/${leaked}"`);
    const entries = out['entry'] as Array<{ fullUrl: string; resource: FhirResource & Record<string, unknown> }>;
    const patientId = entries.find((e) => e.resource.resourceType === 'Patient')!.resource.id!;
    expect(Object.values(map).sort()).toEqual(['Condition/123-45-6789', 'Coverage/M123456', 'Patient/MRN-0042']);
    expect(map[`Patient/${patientId}`]).toBe('Patient/MRN-0042');
    // Every reference to the patient, relative or absolute, now names the same opaque id.
    for (const e of entries.slice(1)) {
      const ref = (e.resource['beneficiary'] ?? e.resource['subject']) as { reference: string } | undefined;
      if (ref) expect(ref.reference).toBe(`Patient/${patientId}`);
    }
    expect((entries[0]!.resource['subject'] as { reference: string }).reference).toBe(`Patient/${patientId}`);
    expect(entries.find((e) => e.resource.resourceType === 'Observation')!.resource.id).toBe('obs-1');
    // Identifiers themselves are payer data and stay (the member id is how the payer finds its member).
    expect(text).toContain('M-123456');
  });

  it('builds each route: FHIR POST, PAS Claim/$submit with the QR Bundle as supporting info, CDex attachment', () => {
    const qrBundle = { resourceType: 'Bundle', type: 'collection', entry: [{ resource: QR }] };
    const base = {
      submissionId: 's-3',
      qrBundle,
      patient: 'Patient/p',
      coverage: 'Coverage/c',
      order: 'DeviceRequest/o',
      orderCodes: [{ system: 'https://bluebutton.cms.gov/resources/codesystem/hcpcs', code: 'E0424' }],
      payerIdentifier: 'http://example.org/payer-id|P1',
      memberId: 'M-1',
      now: new Date('2026-12-05T10:00:00Z'),
    };
    expect(routeRequest('bundle', base)).toEqual({ path: 'Bundle', body: qrBundle });
    const pas = routeRequest('pas-claim-submit', base);
    expect(pas.path).toBe('Claim/$submit');
    const entries = pas.body['entry'] as Array<{ fullUrl: string; resource: FhirResource & Record<string, unknown> }>;
    expect(entries[0]!.resource.resourceType).toBe('Claim');
    const info = (entries[0]!.resource['supportingInfo'] as Array<{ valueReference: { reference: string } }>)[0]!;
    expect(entries.find((e) => e.fullUrl === info.valueReference.reference)?.resource).toEqual(qrBundle);
    expect(entries[0]!.resource['use']).toBe('preauthorization');
    const cdex = routeRequest('cdex-submit-attachment', base);
    expect(cdex.path).toBe('$submit-attachment');
    const params = cdex.body['parameter'] as Array<{
      name: string;
      part?: Array<{ name: string; resource?: unknown }>;
    }>;
    expect(params.map((p) => p.name)).toEqual(['TrackingId', 'AttachTo', 'PayerId', 'MemberId', 'Attachment']);
    expect(params.at(-1)!.part!.find((p) => p.name === 'Content')!.resource).toEqual(qrBundle);
  });
});
