import { existsSync } from 'node:fs';
import { chromium as playwright, type Browser } from 'playwright-core';

const DEBIAN_CHROMIUM = '/usr/bin/chromium';
/** Flags for a headless run on a machine whose network is closed (no background connections, no first-run UI). */
const QUIET_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface FoundBrowser {
  executablePath: string;
  source: 'CHROMIUM_PATH' | 'debian' | 'bundled';
  args: string[];
}

/**
 * Finds a Chromium for the browser tests, never downloading one: `CHROMIUM_PATH`, else Debian's
 * `/usr/bin/chromium`, else the headless Chromium shipped inside the `@sparticuz/chromium` dev dependency (unpacked
 * from the package into the temp folder). `DTR_TEST_BROWSER=bundled` forces the packaged one, so that path stays
 * tested on machines that have Debian's.
 */
export async function findChromium(env: NodeJS.ProcessEnv = process.env): Promise<FoundBrowser> {
  const forced = env['DTR_TEST_BROWSER'];
  if (forced && forced !== 'bundled' && forced !== 'auto')
    throw new Error(`DTR_TEST_BROWSER=${forced} is not understood: use "bundled" or leave it unset`);
  if (forced !== 'bundled') {
    const configured = env['CHROMIUM_PATH'];
    if (configured) {
      if (!existsSync(configured)) throw new Error(`CHROMIUM_PATH=${configured} does not exist`);
      return { executablePath: configured, source: 'CHROMIUM_PATH', args: QUIET_FLAGS };
    }
    if (existsSync(DEBIAN_CHROMIUM)) return { executablePath: DEBIAN_CHROMIUM, source: 'debian', args: QUIET_FLAGS };
  }
  const bundled = (await import('@sparticuz/chromium')).default;
  const executablePath = await bundled.executablePath();
  // Not the package's own flag list: it turns off web security and site isolation (meant for a Lambda), which would
  // hide exactly what page tests check (CSP, same-origin). Only what this headless build needs is added.
  return {
    executablePath,
    source: 'bundled',
    args: [...QUIET_FLAGS, '--no-zygote', '--use-gl=angle', '--use-angle=swiftshader'],
  };
}

/** Launches the browser `findChromium` picks; the chosen source is printed once so a run says what it used. */
export async function launchBrowser(): Promise<Browser> {
  const found = await findChromium();
  console.log(`browser tests use ${found.source} chromium at ${found.executablePath}`);
  return playwright.launch({ executablePath: found.executablePath, args: found.args });
}
