import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findChromium } from './support/chromium.js';

describe('browser discovery for the page tests', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dtr-browser-'));
  const fakeChromium = path.join(dir, 'chromium');
  writeFileSync(fakeChromium, '');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('uses CHROMIUM_PATH first', async () => {
    await expect(findChromium({ CHROMIUM_PATH: fakeChromium })).resolves.toMatchObject({
      executablePath: fakeChromium,
      source: 'CHROMIUM_PATH',
    });
  });

  it('refuses a CHROMIUM_PATH that does not exist instead of quietly using another browser', async () => {
    await expect(findChromium({ CHROMIUM_PATH: path.join(dir, 'missing') })).rejects.toThrow(/does not exist/);
  });

  it('DTR_TEST_BROWSER=bundled takes the Chromium shipped in the npm package even when CHROMIUM_PATH is set', async () => {
    const found = await findChromium({ DTR_TEST_BROWSER: 'bundled', CHROMIUM_PATH: fakeChromium });
    expect(found.source).toBe('bundled');
    expect(found.executablePath).not.toBe(fakeChromium);
    // The package's own Lambda flags would switch off what page tests check.
    expect(found.args).not.toContain('--disable-web-security');
  });

  it('refuses a DTR_TEST_BROWSER value it does not know', async () => {
    await expect(findChromium({ DTR_TEST_BROWSER: 'firefox' })).rejects.toThrow(/not understood/);
  });
});
