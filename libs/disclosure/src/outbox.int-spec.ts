import { randomUUID } from 'node:crypto';
import { AuditLog } from '@dtr/audit';
import { SystemClock } from '@dtr/kernel';
import { createDataSource } from '@dtr/persistence';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type DeliveryResult, Outbox } from './outbox.js';
import { type NewSubmission, type Sealer, SubmissionRepository } from './submission.repository.js';

/** Reversible, and refuses a ciphertext opened with another row's associated data (what the real box does too). */
const sealer: Sealer = {
  seal: (plain, aad) => Buffer.from(JSON.stringify([aad, plain])).toString('base64'),
  open: (sealed, aad) => {
    const [was, plain] = JSON.parse(Buffer.from(sealed, 'base64').toString()) as [string, string];
    if (was !== aad) throw new Error('sealed for another row');
    return plain;
  },
};

const clock = new SystemClock();

function newSubmission(overrides: Partial<NewSubmission> = {}): NewSubmission {
  return {
    formId: randomUUID(),
    payerId: 'payer-1',
    tenantId: 't-1',
    sessionIdHash: `s-${randomUUID()}`,
    patientHash: 'ph',
    route: 'bundle',
    igVersion: '2.2',
    questionnaireUrl: 'http://example.org/Questionnaire/q',
    qrEhrId: `qr-${randomUUID()}`,
    choices: {},
    body: '{"resourceType":"Bundle"}',
    sha256: 'x',
    sha1: 'y',
    idMap: {},
    path: 'Bundle',
    ...overrides,
  };
}

/** Submissions, the outbox queue and the audit log on real PostgreSQL with the real migrations. */
describe('outbox and submissions (real PostgreSQL)', () => {
  let ds: DataSource;
  let second: DataSource;
  let repo: SubmissionRepository;

  beforeAll(async () => {
    ds = createDataSource({ url: inject('databaseUrl'), entities: [] });
    second = createDataSource({ url: inject('databaseUrl'), entities: [] });
    await Promise.all([ds.initialize(), second.initialize()]);
    repo = new SubmissionRepository(ds, sealer, clock);
  });
  afterAll(async () => {
    await ds?.destroy();
    await second?.destroy();
  });

  it('keeps one submission per questionnaire response and payer: a second create, from any form, returns the first', async () => {
    const input = newSubmission();
    const first = await repo.createOrGet(input);
    const again = await repo.createOrGet({ ...input, formId: randomUUID(), body: '{"other":true}' });
    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect(again.submission.id).toBe(first.submission.id);
    expect(again.submission.body).toBe(input.body);
    expect(first.submission.state).toBe('writing-back');
    // Stored sealed: the bytes are not in the row in clear.
    const [row] = (await ds.query(`SELECT bundle_enc FROM submission WHERE id = $1`, [first.submission.id])) as Array<{
      bundle_enc: string;
    }>;
    expect(row!.bundle_enc).not.toContain('resourceType');
  });

  it('lets one instance write the copy at a time, and another take over a copy abandoned past its lease', async () => {
    const { submission } = await repo.createOrGet(newSubmission());
    expect(await repo.claimWriteBack(submission.id, 60)).toBe(true);
    expect(await repo.claimWriteBack(submission.id, 60)).toBe(false);
    expect((await repo.abandonedWriteBacks(1000)).map((s) => s.id)).not.toContain(submission.id);
    await new Promise((r) => setTimeout(r, 80));
    expect((await repo.abandonedWriteBacks(1000)).map((s) => s.id)).toContain(submission.id);
    expect(await repo.claimWriteBack(submission.id, 60_000)).toBe(true);
    await repo.queue(submission.id, { documentReference: 'DocumentReference/7', provenance: 'Provenance/7' });
    // Queued: no longer waiting for its copy, nobody writes it again.
    expect(await repo.claimWriteBack(submission.id, 60)).toBe(false);
    expect((await repo.abandonedWriteBacks(1000)).map((s) => s.id)).not.toContain(submission.id);
  });

  it('queues only once, after the copy, with the outbox row in the same transaction', async () => {
    const { submission } = await repo.createOrGet(newSubmission());
    const outbox = new Outbox(ds, repo, clock, { baseDelayMs: 1, maxAttempts: 3 });
    // A failing `also` rolls the whole move back: no queued state without its outbox row, and vice versa.
    await expect(
      repo.queue(submission.id, { documentReference: 'DocumentReference/1', provenance: 'Provenance/1' }, () =>
        Promise.reject(new Error('audit write failed')),
      ),
    ).rejects.toThrow('audit write failed');
    expect((await repo.get(submission.id))!.state).toBe('writing-back');
    expect(await ds.query(`SELECT 1 FROM outbox WHERE submission_id = $1`, [submission.id])).toHaveLength(0);
    expect(
      await repo.queue(submission.id, { documentReference: 'DocumentReference/1', provenance: 'Provenance/1' }),
    ).toBe(true);
    expect(
      await repo.queue(submission.id, { documentReference: 'DocumentReference/2', provenance: 'Provenance/2' }),
    ).toBe(false);
    const queued = await repo.get(submission.id);
    expect(queued).toMatchObject({ state: 'queued', documentReference: 'DocumentReference/1' });
    const sent: string[] = [];
    const attempts = await outbox.drain({
      send: (s) => {
        sent.push(s.id);
        return Promise.resolve({ kind: 'accepted', outcome: 'accepted', answer: { ok: true }, status: 201 });
      },
    });
    expect(attempts).toBeGreaterThanOrEqual(1);
    expect(sent.filter((id) => id === submission.id)).toHaveLength(1);
    expect(await repo.get(submission.id)).toMatchObject({
      state: 'delivered',
      payerOutcome: 'accepted',
      payerAnswer: { ok: true },
    });
  });

  it('retries with backoff, dead-letters after the last attempt, and an operator retry delivers once', async () => {
    const { submission } = await repo.createOrGet(newSubmission());
    await repo.queue(submission.id, { documentReference: 'DocumentReference/3', provenance: 'Provenance/3' });
    const outbox = new Outbox(ds, repo, clock, { baseDelayMs: 1, maxDelayMs: 2, maxAttempts: 3 });
    const results: DeliveryResult[] = [];
    const down = {
      send: () => {
        const r: DeliveryResult = { kind: 'retry', error: 'payer answered 503', status: 503 };
        results.push(r);
        return Promise.resolve(r);
      },
    };
    const deadline = Date.now() + 10_000;
    while ((await repo.get(submission.id))!.state !== 'dead' && Date.now() < deadline) {
      await outbox.drain(down);
      await new Promise((r) => setTimeout(r, 5));
    }
    const dead = await repo.get(submission.id);
    expect(dead).toMatchObject({ state: 'dead', attempts: 3, lastError: 'payer answered 503' });
    expect(await outbox.retry(submission.id)).toBe(true);
    expect(await outbox.retry(submission.id)).toBe(false);
    let delivered = 0;
    await outbox.drain({
      send: (s) => {
        if (s.id === submission.id) delivered++;
        return Promise.resolve({ kind: 'accepted', outcome: 'accepted', answer: {}, status: 200 });
      },
    });
    expect(delivered).toBe(1);
    expect((await repo.get(submission.id))!.state).toBe('delivered');
  });

  it('two instances draining at once claim different rows: each submission is sent once', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const { submission } = await repo.createOrGet(newSubmission());
      await repo.queue(submission.id, { documentReference: `DocumentReference/${i}`, provenance: `Provenance/${i}` });
      ids.push(submission.id);
    }
    const counts = new Map<string, number>();
    const sender = {
      send: async (s: { id: string }) => {
        counts.set(s.id, (counts.get(s.id) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, 5));
        return { kind: 'accepted' as const, outcome: 'accepted', answer: {}, status: 200 };
      },
    };
    const repo2 = new SubmissionRepository(second, sealer, clock);
    await Promise.all([new Outbox(ds, repo, clock).drain(sender), new Outbox(second, repo2, clock).drain(sender)]);
    for (const id of ids) expect(counts.get(id), id).toBe(1);
  });

  it('a sender that dies mid-flight leaves its row to be claimed again after the lease; a late answer changes nothing', async () => {
    const { submission } = await repo.createOrGet(newSubmission());
    await repo.queue(submission.id, { documentReference: 'DocumentReference/9', provenance: 'Provenance/9' });
    const outbox = new Outbox(ds, repo, clock, { leaseMs: 50 });
    let claimed = await outbox.claim();
    while (claimed && claimed.submission.id !== submission.id) claimed = await outbox.claim();
    expect(claimed?.submission.id).toBe(submission.id);
    // Within the lease nobody else gets it.
    let other = await outbox.claim();
    while (other && other.submission.id !== submission.id) other = await outbox.claim();
    expect(other).toBeUndefined();
    await new Promise((r) => setTimeout(r, 80));
    const again = await outbox.claim();
    expect(again?.submission.id).toBe(submission.id);
    expect(again?.attempt).toBe(2);
    // The first claimant's late answer is not recorded; the second's is.
    expect(await outbox.record(claimed!, { kind: 'accepted', outcome: 'accepted', answer: {}, status: 200 })).toBe(
      'lost-lease',
    );
    expect(await outbox.record(again!, { kind: 'accepted', outcome: 'accepted', answer: {}, status: 200 })).toBe(
      'delivered',
    );
  });

  it('keeps the audit trail append-only and finds events by patient without holding the patient id', async () => {
    const audit = new AuditLog(ds, Buffer.alloc(32, 7), clock);
    const submissionId = randomUUID();
    const patientHash = audit.hash('Patient/p-audit');
    await audit.record({
      kind: 'ehr-write-back',
      action: 'C',
      outcome: '0',
      patientHash,
      submissionId,
      agents: [{ type: 'client', who: 'dtr-disclose', requestor: true }],
      entities: [{ what: audit.hash('DocumentReference/1'), type: 'DocumentReference', detail: { sha256: 'abc' } }],
    });
    const found = await audit.search({ patient: 'Patient/p-audit' });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ kind: 'ehr-write-back', submissionId, patientHash });
    expect(JSON.stringify(found)).not.toContain('p-audit');
    await expect(
      ds.query(`UPDATE audit_event SET outcome = '8' WHERE submission_id = $1`, [submissionId]),
    ).rejects.toThrow(/append-only/);
    await expect(ds.query(`DELETE FROM audit_event WHERE submission_id = $1`, [submissionId])).rejects.toThrow(
      /append-only/,
    );
    await expect(ds.query(`TRUNCATE audit_event`)).rejects.toThrow(/append-only/);
    expect(await audit.search({ submissionId })).toHaveLength(1);
  });
});
