import { Controller, Get, Post, Query, Req, Res } from '@nestjs/common';
import { ApiFoundResponse, ApiOperation, ApiQuery, ApiSeeOtherResponse, ApiTags } from '@nestjs/swagger';
import { AuditLog } from '@dtr/audit';
import { DtrError, html } from '@dtr/kernel';
import {
  LaunchService,
  opaqueId,
  type SessionRecord,
  SessionStore,
  SmartSessions,
  type StartedAuthorization,
  TenantRegistry,
} from '@dtr/smart';
import type { Request, Response } from 'express';
import { BrowserCookies } from '../auth/cookies.js';
import { Public } from '../auth/public.decorator.js';
import { embeddedSession } from '../auth/session-cookie.strategy.js';
import { sendErrorPage } from '../http/error-page.js';
import { allowFraming } from '../http/content-security-policy.js';
import { JsonLogger } from '../logging/json-logger.js';

const ATTEMPT_COOKIE_MS = 10 * 60 * 1000;

/**
 * The browser side of SMART App Launch. Tokens never reach the browser: it gets an opaque session cookie.
 * @see https://hl7.org/fhir/smart-app-launch/app-launch.html
 */
@ApiTags('launch')
@Controller()
export class LaunchController {
  constructor(
    private readonly launches: LaunchService,
    private readonly cookies: BrowserCookies,
    private readonly logger: JsonLogger,
    private readonly audit: AuditLog,
    private readonly tenants: TenantRegistry,
    private readonly sessions: SessionStore,
    private readonly smart: SmartSessions,
  ) {}

  @Public()
  @Get('launch')
  @ApiOperation({ summary: 'EHR launch: redirects to the EHR authorization endpoint (iss must be a registered EHR)' })
  @ApiQuery({ name: 'iss', required: true })
  @ApiQuery({ name: 'launch', required: true })
  @ApiFoundResponse({ description: 'Redirect to the EHR' })
  async ehrLaunch(@Query('iss') iss: unknown, @Query('launch') launch: unknown, @Res() res: Response): Promise<void> {
    try {
      if (typeof iss !== 'string' || typeof launch !== 'string') {
        throw new DtrError('INVALID_INPUT', 'the launch needs exactly one iss and one launch parameter');
      }
      const binding = opaqueId();
      this.redirectToEhr(res, binding, await this.launches.startEhrLaunch(iss, launch, binding));
    } catch (error) {
      const tenant =
        typeof iss === 'string' ? await this.tenants.findByFhirBase(iss).catch(() => undefined) : undefined;
      allowFraming(res, tenant?.frameAncestors ?? []);
      sendErrorPage(res, error, this.logger, 'Launch refused');
    }
  }

  @Public()
  @Get('launch/standalone')
  @ApiOperation({ summary: 'Standalone launch for a registered EHR: the EHR lets the user pick a patient' })
  @ApiQuery({ name: 'tenant', required: true })
  async standaloneLaunch(@Query('tenant') tenant: unknown, @Res() res: Response): Promise<void> {
    try {
      if (typeof tenant !== 'string') throw new DtrError('INVALID_INPUT', 'tenant is required');
      const binding = opaqueId();
      this.redirectToEhr(res, binding, await this.launches.startStandaloneLaunch(tenant, binding));
    } catch (error) {
      const known = typeof tenant === 'string' ? await this.tenants.get(tenant).catch(() => undefined) : undefined;
      allowFraming(res, known?.frameAncestors ?? []);
      sendErrorPage(res, error, this.logger, 'Launch refused');
    }
  }

  @Post('disclose/authorize')
  @ApiOperation({
    summary: 'User-delegated disclosure: starts a second authorization with the disclose client (a form on /app)',
  })
  @ApiSeeOtherResponse({ description: 'Redirect to the EHR' })
  async discloseAuthorize(@Req() req: Request & { user: SessionRecord }, @Res() res: Response): Promise<void> {
    try {
      const binding = opaqueId();
      const started = await this.launches.startDisclose(req.user, binding);
      // The session's frame policy is already on the response (session guard); the binding cookie follows it.
      res.cookie(this.cookies.binding, binding, this.cookies.options(ATTEMPT_COOKIE_MS, embeddedSession(req)));
      res.redirect(303, started.authorizationUrl);
    } catch (error) {
      sendErrorPage(res, error, this.logger, 'Authorization refused', 'Go back to the app and try again.');
    }
  }

  /** The authorization used to start from a link: a GET (a stale bookmark, a prefetch) no longer starts anything. */
  @Public()
  @Get('disclose/authorize')
  @ApiOperation({ summary: 'Answers 405: the disclosure authorization starts with a POST (the button on /app)' })
  discloseAuthorizeGet(@Res() res: Response): void {
    res
      .status(405)
      .set('Allow', 'POST')
      .set('Cache-Control', 'no-store')
      .type('text/html')
      .send(
        html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Use the button on the app page</title></head><body><h1>Use the button on the app page</h1><p id="message">Sending to the payer is authorized with the <strong>Authorize sending to the payer</strong> button on the app page, not by opening this address.</p><p><a href="/app">Back to the app</a></p></body></html>`
          .value,
      );
  }

  @Public()
  @Get('callback')
  @ApiOperation({ summary: 'OAuth redirect URI: exchanges the code, then sets the session cookie (opaque, no token)' })
  async callback(@Req() req: Request, @Res() res: Response): Promise<void> {
    let embedded = false;
    try {
      const binding = this.cookies.read(req, this.cookies.binding);
      if (!binding) throw new DtrError('UNAUTHENTICATED', 'this browser did not start the sign-in (or took too long)');
      const query = req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?')) : '';
      const result = await this.launches.complete(new URL(`http://callback.invalid/callback${query}`), binding);
      const session = 'disclosed' in result ? result.disclosed : result.session;
      const frameAncestors = await this.tenants.frameAncestors(session.tenantId);
      embedded = frameAncestors.length > 0;
      allowFraming(res, frameAncestors);
      this.cookies.clear(res, this.cookies.binding, embedded);
      await this.audit.record({
        kind: 'disclosed' in result ? 'disclose-authorization' : 'launch',
        action: 'E',
        outcome: '0',
        tenantId: session.tenantId,
        sessionIdHash: session.idHash,
        ...(session.patient ? { patientHash: this.audit.hash(`Patient/${session.patient}`) } : {}),
        agents: session.fhirUser ? [{ type: 'user', who: session.fhirUser, requestor: true }] : [],
        entities: [],
        detail: { step: 'disclosed' in result ? 'user-delegated disclose authorization' : 'signed in' },
      });
      if ('disclosed' in result) {
        res.redirect(303, '/app?disclose=authorized');
        return;
      }
      await this.endPreviousSession(req);
      // A new id, unrelated to anything the browser held before sign-in (session fixation defense).
      res.cookie(
        this.cookies.session,
        result.sessionId,
        this.cookies.options(result.session.expiresAt.getTime() - Date.now(), embedded),
      );
      res.redirect(303, '/app');
    } catch (error) {
      // A sign-in that failed after its attempt was found names its tenant: its page may be shown in that EHR's frame.
      const tenantId = error instanceof DtrError ? error.details['tenantId'] : undefined;
      const frameAncestors =
        typeof tenantId === 'string' ? await this.tenants.frameAncestors(tenantId).catch(() => []) : [];
      embedded ||= frameAncestors.length > 0;
      allowFraming(res, frameAncestors);
      this.cookies.clear(res, this.cookies.binding, embedded);
      sendErrorPage(res, error, this.logger);
    }
  }

  /**
   * Binds this browser to the started authorization (a short-lived cookie, of the embedded kind for a tenant whose EHR
   * frames the app), opens the response to that tenant's frame policy, and sends the browser to the EHR.
   */
  private redirectToEhr(res: Response, binding: string, started: StartedAuthorization): void {
    const embedded = started.frameAncestors.length > 0;
    allowFraming(res, started.frameAncestors);
    res.cookie(this.cookies.binding, binding, this.cookies.options(ATTEMPT_COOKIE_MS, embedded));
    res.redirect(302, started.authorizationUrl);
  }

  /**
   * A launch completed in a browser that still held a session: that older session ends (revoked at the EHR when it
   * can be, its tokens deleted here), so one browser holds one live session.
   */
  private async endPreviousSession(req: Request): Promise<void> {
    const previous = this.cookies.read(req, this.cookies.session);
    if (!previous) return;
    const session = await this.sessions.find(previous);
    if (!session) return;
    await this.smart.logout(session);
    this.logger.entry('info', 'a new launch in this browser ended its previous session', {}, 'LaunchController');
  }
}
