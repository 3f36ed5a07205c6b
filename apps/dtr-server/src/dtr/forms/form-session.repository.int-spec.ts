import { randomBytes } from 'node:crypto';
import { type Clock, SystemClock } from '@dtr/kernel';
import { createDataSource } from '@dtr/persistence';
import { KeyRingSecretBox } from '@dtr/smart';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FormSessionRepository, type NewFormSession } from './form-session.repository.js';

const PHI = 'Okafor-7f3a9';

/** The form_session table on real PostgreSQL with the real migrations. */
describe('FormSessionRepository (real PostgreSQL)', () => {
  let dataSource: DataSource;
  let repo: FormSessionRepository;
  const clock: Clock = new SystemClock();
  const suffix = randomBytes(4).toString('hex');
  const tenant = `forms-${suffix}`;
  const sessionA = `a-${suffix}`;
  const sessionB = `b-${suffix}`;

  const form = (session: string): NewFormSession => ({
    sessionIdHash: session,
    tenantId: tenant,
    patient: 'p1',
    payer: { id: 'payer', name: 'Payer' },
    questionnaire: { url: 'http://example.org/Questionnaire/q', version: '1.0.0', title: 'Q' },
    igVersion: '2.2',
    status: 'not-started',
    definition: {
      questionnaire: { resourceType: 'Questionnaire', item: [] },
      valueSets: [],
      issues: [],
      options: {},
      answerContext: {},
      orders: ['DeviceRequest/o1'],
      coverage: ['Coverage/c1'],
      author: { practitioner: 'Practitioner/pr1' },
    },
    prefill: { resourceType: 'QuestionnaireResponse', item: [{ linkId: 'name', answer: [{ valueString: PHI }] }] },
    ehr: {},
  });

  beforeAll(async () => {
    dataSource = createDataSource({ url: inject('databaseUrl'), entities: [] });
    await dataSource.initialize();
    await dataSource.query(
      `INSERT INTO ehr_tenant (id, name, fhir_base, disclose_mode) VALUES ($1, 'T', $2, 'user-delegated')`,
      [tenant, `https://${tenant}.example.org/fhir`],
    );
    for (const session of [sessionA, sessionB]) {
      await dataSource.query(
        `INSERT INTO app_session (id_hash, tenant_id, fhir_base, expires_at) VALUES ($1, $2, 'https://x', now() + interval '1 hour')`,
        [session, tenant],
      );
    }
    repo = new FormSessionRepository(dataSource, new KeyRingSecretBox(new Map([['k', randomBytes(32)]])), clock);
  });
  afterAll(async () => {
    await dataSource?.query(`DELETE FROM ehr_tenant WHERE id = $1`, [tenant]);
    await dataSource?.destroy();
  });

  it('keeps prefill and drafts only sealed, and gives them back to their own session only', async () => {
    const [created] = await repo.replaceForSession(sessionA, [form(sessionA)]);
    const draft = {
      resourceType: 'QuestionnaireResponse',
      item: [{ linkId: 'name', answer: [{ valueString: `${PHI}-draft` }] }],
    };
    await repo.saveDraft(created!.id, {
      status: 'in-progress',
      draft,
      ehr: { id: 'qr1', versionId: '1', savedAt: new Date() },
    });

    const raw = (await dataSource.query(`SELECT * FROM form_session WHERE id = $1`, [created!.id])) as unknown[];
    expect(JSON.stringify(raw)).not.toContain(PHI);

    const loaded = await repo.get(sessionA, created!.id);
    expect(loaded).toMatchObject({ status: 'in-progress', draft, ehr: { id: 'qr1', versionId: '1' } });
    expect(JSON.stringify(loaded!.prefill)).toContain(PHI);
    expect(await repo.get(sessionB, created!.id)).toBeUndefined();
    expect(await repo.get(sessionA, 'not-a-uuid')).toBeUndefined();
    expect((await repo.listForSession(sessionB)).map((f) => f.id)).not.toContain(created!.id);
  });

  it('refuses a sealed draft moved to another row (AAD binds it to its row)', async () => {
    const [one] = await repo.replaceForSession(sessionA, [form(sessionA)]);
    const [two] = await repo.replaceForSession(sessionB, [form(sessionB)]);
    await dataSource.query(
      `UPDATE form_session SET prefill_enc = (SELECT prefill_enc FROM form_session WHERE id = $1) WHERE id = $2`,
      [one!.id, two!.id],
    );
    await expect(repo.get(sessionB, two!.id)).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('records a conflict and clears it on the next successful save; purges forms by age', async () => {
    const [created] = await repo.replaceForSession(sessionA, [form(sessionA)]);
    const theirs = { resourceType: 'QuestionnaireResponse', id: 'qr1', meta: { versionId: '3' } };
    const draft = { resourceType: 'QuestionnaireResponse' };
    await repo.saveDraft(created!.id, {
      status: 'in-progress',
      draft,
      ehr: { id: 'qr1', error: 'x' },
      conflict: theirs,
    });
    expect((await repo.get(sessionA, created!.id))!.conflict).toEqual(theirs);
    await repo.saveDraft(created!.id, { status: 'in-progress', draft, ehr: { id: 'qr1' }, conflict: null });
    const cleared = await repo.get(sessionA, created!.id);
    expect(cleared!.conflict).toBeUndefined();
    expect(cleared!.ehr.error).toBeUndefined();

    expect(await repo.purgeOlderThan(new Date(Date.now() - 3_600_000))).toBe(0);
    expect(await repo.purgeOlderThan(new Date(Date.now() + 1000))).toBeGreaterThanOrEqual(1);
    expect(await repo.get(sessionA, created!.id)).toBeUndefined();
  });

  it('goes with its session', async () => {
    const [created] = await repo.replaceForSession(sessionB, [form(sessionB)]);
    await dataSource.query(`DELETE FROM app_session WHERE id_hash = $1`, [sessionB]);
    expect(await repo.get(sessionB, created!.id)).toBeUndefined();
  });
});
