import { SystemClock } from '@dtr/kernel';
import type { AuditLog } from '@dtr/audit';
import type { SessionRecord, SmartSessions } from '@dtr/smart';
import { describe, expect, it } from 'vitest';
import type { FormRulesPool } from './form-rules-pool.js';
import type { FormSession, FormSessionRepository } from './form-session.repository.js';
import { FormsUseCase } from './forms.usecase.js';

const form = (id: string): FormSession => ({
  id,
  sessionIdHash: 'h1',
  tenantId: 't1',
  patient: 'p1',
  payer: { id: 'payer', name: 'Payer' },
  questionnaire: { url: 'http://example.org/Questionnaire/q', title: 'Home oxygen' },
  igVersion: '2.2',
  status: 'in-progress',
  definition: {
    questionnaire: { resourceType: 'Questionnaire' },
    valueSets: [],
    issues: [],
    options: {},
    answerContext: {},
    orders: [],
    coverage: [],
    author: {},
  },
  prefill: { resourceType: 'QuestionnaireResponse' },
  ehr: {},
  createdAt: new Date(),
  updatedAt: new Date(),
});

describe('FormsUseCase: one check of a form at a time', () => {
  it('refuses a second save of the same form while the first is being checked, and accepts it afterwards', async () => {
    const releases: Array<() => void> = [];
    const rules = {
      run: () =>
        new Promise((resolve) => releases.push(() => resolve({ ok: false, problems: [{ message: 'refused' }] }))),
    } as unknown as FormRulesPool;
    const forms = { get: async (_session: string, id: string) => form(id) } as unknown as FormSessionRepository;
    const useCase = new FormsUseCase(forms, {} as SmartSessions, new SystemClock(), {} as AuditLog, rules);
    const session = { idHash: 'h1' } as SessionRecord;
    const body = { resourceType: 'QuestionnaireResponse' };

    const first = useCase.save(session, 'f1', body);
    await expect.poll(() => releases.length).toBe(1);
    await expect(useCase.save(session, 'f1', body)).rejects.toMatchObject({
      code: 'CONFLICT',
      message: expect.stringContaining('still being checked'),
    });
    // Another form of the same session is not held back.
    const other = useCase.save(session, 'f2', body);
    await expect.poll(() => releases.length).toBe(2);
    releases.forEach((release) => release());
    expect(await first).toEqual({ kind: 'invalid', problems: [{ message: 'refused' }] });
    expect(await other).toMatchObject({ kind: 'invalid' });

    // Once the first check ended (refused here), the form can be saved again.
    const again = useCase.save(session, 'f1', body);
    await expect.poll(() => releases.length).toBe(3);
    releases[2]!();
    expect(await again).toMatchObject({ kind: 'invalid' });
  });
});
