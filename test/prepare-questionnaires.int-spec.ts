import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AuditLog } from '@dtr/audit';
import { SystemClock } from '@dtr/kernel';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { PeerServer } from '../apps/sandbox/src/shared/peer-server.js';
import { fingerprint } from '../apps/sandbox/src/shared/request-log.js';
import { deviceOrder, sandboxCoverage } from './support/fixtures.js';
import { type PrepareUseCaseSetup, setUpPrepareUseCase } from './support/prepare-use-case.js';
import type { PrepareQuestionnairesUseCase } from '../apps/dtr-server/src/dtr/prepare-questionnaires.usecase.js';

const EHR_TOKEN = `ehr-${randomBytes(12).toString('hex')}`;
const RESOURCES = [
  { resourceType: 'Patient', id: 'p1', birthDate: '1948-07-09', name: [{ family: 'Okafor', given: ['Grace'] }] },
  sandboxCoverage('cov-1', 'p1'),
  deviceOrder('o1', 'p1'),
  {
    resourceType: 'Condition',
    id: 'c1',
    subject: { reference: 'Patient/p1' },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '389087006' }] },
  },
  {
    resourceType: 'Condition',
    id: 'c-other',
    subject: { reference: 'Patient/p2' },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '389087006' }] },
  },
  {
    resourceType: 'Observation',
    id: 'obs-1',
    subject: { reference: 'Patient/p1' },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '2708-6' }] },
  },
  {
    resourceType: 'Encounter',
    id: 'enc-1',
    status: 'finished',
    class: { code: 'AMB' },
    subject: { reference: 'Patient/p1' },
  },
] as const;

/**
 * A minimal EHR FHIR endpoint for this integration test of the use-case (reads and patient searches over a fixed list,
 * bearer token required). The sandbox EHR replaces it in the e2e tier.
 */
async function minimalEhr(): Promise<{
  server: Server;
  base: string;
  requests: Array<{ url: string; token: string | undefined }>;
}> {
  const requests: Array<{ url: string; token: string | undefined }> = [];
  const server = createServer((req, res) => {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    requests.push({ url: req.url ?? '', token });
    res.setHeader('content-type', 'application/fhir+json');
    if (token !== EHR_TOKEN) {
      res.statusCode = 401;
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] }));
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    const [, , type, id] = url.pathname.split('/');
    const matches = RESOURCES.filter((r) => r.resourceType === type);
    if (id) {
      const found = matches.find((r) => r.id === id);
      res.statusCode = found ? 200 : 404;
      res.end(JSON.stringify(found ?? { resourceType: 'OperationOutcome', issue: [] }));
      return;
    }
    const patient = url.searchParams.get('patient');
    const hits = matches.filter((r) => !patient || JSON.stringify(r).includes(`"Patient/${patient}"`));
    res.end(
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'searchset',
        entry: hits.map((resource) => ({ resource, search: { mode: 'match' } })),
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`, requests };
}

describe('PrepareQuestionnairesUseCase: session → payer package → prefill (real PostgreSQL, real HTTP)', () => {
  let setup: PrepareUseCaseSetup;
  let audit: AuditLog;
  let ehr: Awaited<ReturnType<typeof minimalEhr>>;
  let payerPeer: PeerServer;
  let useCase: PrepareQuestionnairesUseCase;
  const policy = { allowInsecureLoopback: true };
  const clock = new SystemClock();

  beforeAll(async () => {
    ehr = await minimalEhr();
    setup = await setUpPrepareUseCase(inject('adminDatabaseUrl'), 'dtr_prepare', { ehrBase: ehr.base, policy, clock });
    ({ audit, payerPeer, useCase } = setup);
  });

  afterAll(async () => {
    await setup?.close();
    ehr?.server.close();
  });

  it('prefills the payer questionnaire from minimum EHR data; EHR and payer tokens never cross', async () => {
    const record = await setup.session({
      accessToken: EHR_TOKEN,
      fhirUser: 'Practitioner/pr1',
      // The encounter comes only inside fhirContext here (no launch `encounter`): it is read as context too.
      fhirContext: [
        { reference: 'DeviceRequest/o1', type: 'DeviceRequest' },
        { reference: 'Coverage/cov-1', type: 'Coverage' },
        { reference: 'Encounter/enc-1', type: 'Encounter' },
      ],
    });
    const prepared = await useCase.run(record);
    expect(prepared.payers.map((p) => p.payer.id)).toEqual(['sandbox-payer']);
    const result = prepared.payers[0]!;
    expect(result.questionnaires.map((q) => q.questionnaire)).toEqual([
      'http://example.org/dtr/Questionnaire/home-oxygen|1.0.0',
    ]);
    const qr = JSON.stringify(result.questionnaires[0]!.questionnaireResponse);
    expect(qr).toContain('"valueDate":"1948-07-09"');
    expect(qr).toContain('"valueBoolean":true');
    expect(qr).toContain('auto-client');

    // Minimum necessary: the context resources by id, one patient-scoped Condition search; then, for the form, the
    // signed-in practitioner (the author) and the patient's in-progress responses (resume). Nothing else.
    expect(ehr.requests.map((r) => r.url).sort()).toEqual([
      '/fhir/Condition?patient=p1',
      '/fhir/Coverage/cov-1',
      '/fhir/DeviceRequest/o1',
      '/fhir/Encounter/enc-1',
      '/fhir/Patient/p1',
      '/fhir/Practitioner/pr1',
      '/fhir/QuestionnaireResponse?subject=Patient%2Fp1&status=in-progress',
    ]);
    expect(result.questionnaires[0]!.formId).toMatch(/^[0-9a-f-]{36}$/);
    expect(result.questionnaires[0]!.formStatus).toBe('not-started');
    // The EHR only ever saw its own token; the payer never saw it.
    expect(new Set(ehr.requests.map((r) => r.token))).toEqual(new Set([EHR_TOKEN]));
    const payerTokens = payerPeer.log
      .all()
      .map((e) => e.tokenFingerprint)
      .filter(Boolean);
    expect(payerTokens.length).toBeGreaterThan(0);
    expect(payerTokens).not.toContain(fingerprint(EHR_TOKEN));
    expect(
      payerPeer.log
        .all()
        .filter((e) => e.path.endsWith('$questionnaire-package'))
        .every((e) => e.tokenIssuedHere),
    ).toBe(true);
    // The access is audited for reasonableness: counts per type and hashes, no ids or content.
    const [access] = await audit.search({ sessionIdHash: record.idHash, kind: 'ehr-data-access' });
    expect(access).toMatchObject({ kind: 'ehr-data-access', action: 'R', patientHash: audit.hash('Patient/p1') });
    expect(access!.detail).toMatchObject({ searches: prepared.dataRead.searches, reads: prepared.dataRead.reads });
    expect(access!.entities.find((e) => e.type === 'Condition')?.detail).toEqual({ searches: 1, reads: 0 });
    expect(JSON.stringify(access)).not.toMatch(/p1"|cov-1|o1"|enc-1|1948/);
  });
});
