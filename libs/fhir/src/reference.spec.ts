import { describe, expect, it } from 'vitest';
import { isFhirId, parseCanonical, parseReference, parseResourceReference, relativeReference } from './reference.js';

describe('isFhirId', () => {
  it('refuses ids made of dots only (path segments, not ids) and keeps ids with dots in them', () => {
    for (const dots of ['.', '..', '...', '.'.repeat(64)]) expect(isFhirId(dots)).toBe(false);
    for (const id of ['a.b', '.a', 'a..', '1.2.840', 'x-1']) expect(isFhirId(id)).toBe(true);
    expect(parseReference('Patient/..')).toBeUndefined();
    expect(parseReference('Patient/./_history/1')).toBeUndefined();
    expect(parseReference('Patient/p1/_history/..')).toBeUndefined();
    expect(parseReference('#..')).toBeUndefined();
  });
});

describe('parseReference', () => {
  it('reads Type/id and Type/id/_history/v', () => {
    expect(parseReference('Patient/pat-1')).toEqual({ kind: 'resource', type: 'Patient', id: 'pat-1' });
    expect(parseReference('DeviceRequest/a.b/_history/3')).toEqual({
      kind: 'resource',
      type: 'DeviceRequest',
      id: 'a.b',
      version: '3',
    });
  });

  it('reads absolute references and keeps their base', () => {
    expect(parseReference('https://ehr.example/fhir/r4/Encounter/e1/_history/2')).toEqual({
      kind: 'resource',
      type: 'Encounter',
      id: 'e1',
      version: '2',
      base: 'https://ehr.example/fhir/r4',
    });
    expect(parseReference('http://127.0.0.1:8080/Practitioner/9')).toMatchObject({
      base: 'http://127.0.0.1:8080',
      type: 'Practitioner',
      id: '9',
    });
  });

  it('reads contained references', () => {
    expect(parseReference('#org1')).toEqual({ kind: 'contained', id: 'org1' });
    expect(parseResourceReference('#org1')).toBeUndefined();
  });

  it('refuses what is not a literal reference', () => {
    for (const bad of [
      '',
      '#',
      'Patient',
      'Patient/',
      'patient/1',
      'Patient/1?x=y',
      'Patient/' + 'a'.repeat(65),
      'Patient/1/_history/',
      'Patient/1/_history',
      'urn:uuid:0b3c6a7e-1d1e-4f3b-9a2c-000000000000',
      'not a base/Patient/1',
      '../Patient/1',
      'Observation?code=x',
    ]) {
      expect(parseReference(bad), bad).toBeUndefined();
    }
    expect(parseReference(undefined)).toBeUndefined();
  });

  it('gives the relative form of any resource reference', () => {
    const ref = parseResourceReference('https://ehr.example/fhir/Coverage/c-1/_history/7');
    expect(ref && relativeReference(ref)).toBe('Coverage/c-1');
  });
});

describe('parseCanonical', () => {
  it('splits url|version, and takes no version when there is none', () => {
    expect(parseCanonical('http://x.org/Library/A|1.0.0')).toEqual({ url: 'http://x.org/Library/A', version: '1.0.0' });
    expect(parseCanonical('http://x.org/Library/A')).toEqual({ url: 'http://x.org/Library/A' });
    expect(parseCanonical('http://x.org/Library/A|')).toEqual({ url: 'http://x.org/Library/A' });
    expect(parseCanonical('http://x.org/vs|2|b')).toEqual({ url: 'http://x.org/vs', version: '2|b' });
  });
});
