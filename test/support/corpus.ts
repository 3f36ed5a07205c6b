import { existsSync } from 'node:fs';
import path from 'node:path';

/**
 * The shared corpus of real payer packages and patient bundles (others' data: read in place, never copied into
 * the repository). `DTR_CORPUS_DIR` points elsewhere (or at a missing folder, to see what runs without it).
 */
export const CORPUS_DIR = path.resolve(
  process.env['DTR_CORPUS_DIR'] || path.join(import.meta.dirname, '..', '..', '..', 'shared', 'corpus'),
);
export const haveCorpus =
  existsSync(path.join(CORPUS_DIR, 'packages')) && existsSync(path.join(CORPUS_DIR, 'patients'));
/** Appended to the name of every corpus test, so a run without the corpus lists it as skipped and says why. */
export const NEEDS_CORPUS = '[needs ../shared/corpus or DTR_CORPUS_DIR; skipped when absent]';

export const corpusPath = (...parts: string[]): string => path.join(CORPUS_DIR, ...parts);

/**
 * The corpus patient bundles the corpus tests run over, named here so that each test is registered (and shown as
 * skipped) whether the corpus is present or not. A file added to the corpus is not tested until it is listed.
 */
export const CORPUS_PATIENT_FILES = [
  'dtr-pat015-inferno.json',
  'pdex-pat999.json',
  'synthea-bulk-3af3708d.json',
  'synthea-bulk-63ee2253.json',
  'synthea-bulk-7bc002fa.json',
  'synthea-bulk-cbc86e51.json',
  'synthea-johnnie679.json',
  'synthea-uscore-pat85.json',
  'testehr-hypoxemia.json',
  'testehr-pat013-john.json',
  'testehr-pat014-teddy.json',
  'testehr-pat015-billy.json',
  'testehr-pat016-jane.json',
  'testehr-pat1234-bobby.json',
] as const;
