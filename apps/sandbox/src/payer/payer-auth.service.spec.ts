import { describe, expect, it } from 'vitest';
import { scopeAllows } from './payer-auth.service.js';

describe('scopeAllows', () => {
  it('reads SMART v2 permissions per resource type', () => {
    expect(scopeAllows(['system/Questionnaire.rs'], 'Questionnaire', 'r')).toBe(true);
    expect(scopeAllows(['system/Questionnaire.rs'], 'Library', 'r')).toBe(false);
    expect(scopeAllows(['system/QuestionnaireResponse.c'], 'QuestionnaireResponse', 'c')).toBe(true);
    expect(scopeAllows(['system/QuestionnaireResponse.c'], 'QuestionnaireResponse', 'r')).toBe(false);
  });

  it('reads SMART v1 read/write and wildcards', () => {
    expect(scopeAllows(['system/*.read'], 'ValueSet', 's')).toBe(true);
    expect(scopeAllows(['system/*.read'], 'QuestionnaireResponse', 'c')).toBe(false);
    expect(scopeAllows(['system/QuestionnaireResponse.write'], 'QuestionnaireResponse', 'c')).toBe(true);
    expect(scopeAllows(['patient/Questionnaire.rs'], 'Questionnaire', 'r')).toBe(false);
  });
});
