import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { html } from '@dtr/kernel';
import type { Browser, BrowserContext, ConsoleMessage, Page, Response as PageResponse } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createEhrAuthServer, type EhrAuthServer } from '../apps/sandbox/src/ehr/auth/index.js';
import { type PeerServer, startPeerServer } from '../apps/sandbox/src/shared/peer-server.js';
import { launchBrowser } from './support/chromium.js';
import { type RunningServer, startServer } from './support/processes.js';

const ADMIN = randomBytes(24).toString('hex');
const SECRET = `s-${randomBytes(12).toString('hex')}`;

/**
 * An EHR page that embeds the app in an iframe, in a real browser. The EHR (its page and its authorization server) is
 * on 127.0.0.1; our server is reached as `localhost`: another site, so in the frame the app is a third party, as it is
 * under a real EHR's domain. A tenant that lists the EHR page's origin gets the app in the frame (launch, sign-in,
 * session cookie, a form POST from inside the frame); a tenant that does not is refused by the browser (CSP).
 */
describe('the app embedded in an EHR page (real browser)', () => {
  let running: RunningServer;
  /** Our server as it listens (127.0.0.1) and as the embedding page addresses it (localhost: another site). */
  let url: string;
  let appBase: string;
  let peer: PeerServer;
  let auth: EhrAuthServer;
  let embedder: Server;
  let embedOrigin: string;
  let browser: Browser;

  beforeAll(async () => {
    running = await startServer(inject('adminDatabaseUrl'), 'dtr_embed', {
      DTR_ADMIN_TOKEN: ADMIN,
      DTR_ENCRYPTION_KEYS: `k:${randomBytes(32).toString('base64')}`,
    });
    url = running.url;
    appBase = url.replace('127.0.0.1', 'localhost');
    peer = await startPeerServer('ehr', '127.0.0.1', 0);
    auth = await createEhrAuthServer({
      peer,
      clients: [
        {
          clientId: 'dtr-embedded',
          auth: 'client_secret_basic',
          clientSecret: SECRET,
          redirectUris: [`${appBase}/callback`, `${url}/callback`],
        },
      ],
      users: [{ id: 'pr1', fhirUser: 'Practitioner/pr1', display: 'Dr. One' }],
      patients: [{ id: 'p1', display: 'Pat One' }],
    });
    // The EHR's page: whatever it is asked to frame, in an iframe; and a form of its own posting into that frame.
    embedder = createServer((req, res) => {
      const query = new URL(req.url ?? '/', 'http://x').searchParams;
      const src = query.get('src') ?? 'about:blank';
      const forge = query.get('forge') ?? 'about:blank';
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(
        html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>EHR</title></head><body><h1>EHR chart</h1><form id="forge" method="post" action="${forge}" target="app"><input type="hidden" name="x" value="1"><button type="submit">post</button></form><iframe id="app" name="app" title="DTR" src="${src}" width="900" height="700"></iframe></body></html>`
          .value,
      );
    });
    await new Promise<void>((resolve) => embedder.listen(0, '127.0.0.1', resolve));
    embedOrigin = `http://127.0.0.1:${(embedder.address() as AddressInfo).port}`;
    browser = await launchBrowser();
  });

  afterAll(async () => {
    await browser?.close();
    embedder?.close();
    await running?.stop();
    await peer?.close();
  });

  const registerTenant = async (frameAncestors: string[], base = appBase) => {
    const response = await fetch(`${url}/admin/tenants/embedding-ehr`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'Embedding EHR',
        fhirBase: auth.fhirBase,
        discloseMode: 'user-delegated',
        singleClient: true,
        frameAncestors,
        supplement: {
          clientId: 'dtr-embedded',
          authMethod: 'client_secret_basic',
          clientSecret: SECRET,
          scopes: ['launch', 'openid', 'fhirUser', 'patient/*.rs', 'user/QuestionnaireResponse.cu'],
          redirectUri: `${base}/callback`,
        },
      }),
    });
    expect(response.status, await response.clone().text()).toBe(200);
  };
  const launchUrl = (base: string, launch = auth.createLaunch({ patient: 'p1', user: 'pr1' })) =>
    `${base}/launch?iss=${encodeURIComponent(auth.fhirBase)}&launch=${launch}`;
  const embedding = (src: string, forge = '') =>
    `${embedOrigin}/?src=${encodeURIComponent(src)}&forge=${encodeURIComponent(forge)}`;

  /** A fresh browser profile, recording our server's responses and the page's console (CSP reports go there). */
  async function open(): Promise<{ context: BrowserContext; page: Page; ours: PageResponse[]; console: string[] }> {
    const context = await browser.newContext();
    const page = await context.newPage();
    const ours: PageResponse[] = [];
    const consoleLines: string[] = [];
    page.on('response', (r) => {
      if (r.url().startsWith(appBase) || r.url().startsWith(url)) ours.push(r);
    });
    page.on('console', (m: ConsoleMessage) => consoleLines.push(m.text()));
    return { context, page, ours, console: consoleLines };
  }

  it('for a tenant that lists the EHR page, launches and signs in inside the frame, and its forms work there', async () => {
    await registerTenant([embedOrigin]);
    const { context, page, ours } = await open();
    try {
      await page.goto(embedding(launchUrl(appBase), `${appBase}/api/session/logout`));
      const frame = page.frameLocator('#app');
      await frame.locator('#signed-in').waitFor({ timeout: 30_000 });
      expect(await frame.locator('#patient').textContent()).toBe('p1');
      expect(await frame.locator('h1').textContent()).toBe('Documentation for Embedding EHR');

      // The app page came with this tenant's frame policy; nothing of ours said DENY.
      const appPage = ours.find((r) => r.url() === `${appBase}/app`)!;
      expect(appPage.status()).toBe(200);
      expect(await appPage.headerValue('content-security-policy')).toContain(`frame-ancestors 'self' ${embedOrigin}`);
      expect(await appPage.headerValue('x-frame-options')).toBeNull();
      // The session cookie a third-party frame can hold: SameSite=None, Secure (on http://localhost), HttpOnly.
      const session = (await context.cookies(appBase)).find((c) => c.name === 'dtr_session');
      expect(session).toMatchObject({ sameSite: 'None', secure: true, httpOnly: true, domain: 'localhost' });

      // The EHR page's own form posting into the frame: the session cookie (SameSite=None) rides along, so the
      // request is refused for where it came from (Sec-Fetch-Site: cross-site), before any route sees it.
      const [forged] = await Promise.all([
        page.waitForResponse((r) => r.url() === `${appBase}/api/session/logout`),
        page.locator('#forge button').click(),
      ]);
      expect(forged.status()).toBe(403);
      expect(await forged.request().headerValue('sec-fetch-site')).toBe('cross-site');
      // Its refusal page is not the session's: the forging page cannot even show it in the frame.
      expect(await forged.headerValue('content-security-policy')).toContain("frame-ancestors 'none'");
      await page.goto(embedding(`${appBase}/app`));
      await page.frameLocator('#app').locator('#signed-in').waitFor({ timeout: 30_000 });

      // A form inside the frame posts to our own origin (Sec-Fetch-Site: same-origin) with the session cookie.
      const [logout] = await Promise.all([
        page.waitForResponse((r) => r.url() === `${appBase}/api/session/logout`),
        frame.locator('form[action="/api/session/logout"] button').click(),
      ]);
      expect(logout.status()).toBe(200);
      expect(await logout.json()).toMatchObject({ loggedOut: true });
      expect((await context.cookies(appBase)).find((c) => c.name === 'dtr_session')).toBeUndefined();
    } finally {
      await context.close();
    }
  });

  it("for a tenant that lists the EHR page, shows the launch's error page inside the frame", async () => {
    await registerTenant([embedOrigin]);
    const { context, page } = await open();
    try {
      await page.goto(embedding(launchUrl(appBase, 'x'.repeat(8193))));
      const message = page.frameLocator('#app').locator('#message');
      await message.waitFor({ timeout: 30_000 });
      expect(await message.textContent()).toContain('at most 8192 (8 KiB)');
    } finally {
      await context.close();
    }
  });

  it('for a tenant that does not list the EHR page, the browser refuses to show the app in the frame', async () => {
    await registerTenant([]);
    for (const src of [launchUrl(appBase), launchUrl(appBase, 'x'.repeat(8193))]) {
      const { context, page, ours, console } = await open();
      try {
        const refused = page.waitForEvent('console', {
          predicate: (m) => /frame-ancestors 'none'/.test(m.text()),
          timeout: 30_000,
        });
        await page.goto(embedding(src));
        await refused;
        expect(console.join('\n')).toMatch(
          new RegExp(
            `Framing '${appBase}/' violates the following Content Security Policy directive: "frame-ancestors 'none'"`,
          ),
        );
        // What our server answered carried the refusal; what the frame shows is not ours.
        const last = ours.filter((r) => r.status() < 300 || r.status() >= 400).at(-1)!;
        expect(await last.headerValue('content-security-policy')).toContain("frame-ancestors 'none'");
        expect(await last.headerValue('x-frame-options')).toBe('DENY');
        const frame = page.frames().find((f) => f !== page.mainFrame())!;
        expect(await frame.locator('#signed-in, #message').count()).toBe(0);
      } finally {
        await context.close();
      }
    }
  });

  it('for a tenant that lists the EHR page, the app still opens in a tab of its own (Secure cookie on http://127.0.0.1)', async () => {
    await registerTenant([embedOrigin], url);
    const { context, page } = await open();
    try {
      await page.goto(launchUrl(url));
      await page.waitForURL(`${url}/app`);
      await page.locator('#signed-in').waitFor();
      const session = (await context.cookies(url)).find((c) => c.name === 'dtr_session');
      expect(session).toMatchObject({ sameSite: 'None', secure: true, domain: '127.0.0.1' });
    } finally {
      await context.close();
    }
  });
});
