import { Controller, Get, Query, Req, Res } from '@nestjs/common';
import { ApiFoundResponse, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import { AuditLog } from '@dtr/audit';
import { DtrError } from '@dtr/kernel';
import { LaunchService, opaqueId, type SessionRecord, SessionStore, SmartSessions } from '@dtr/smart';
import type { Request, Response } from 'express';
import { BrowserCookies } from '../auth/cookies.js';
import { Public } from '../auth/public.decorator.js';
import { sendErrorPage } from '../http/error-page.js';
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
      const binding = this.bindBrowser(res);
      const { authorizationUrl } = await this.launches.startEhrLaunch(iss, launch, binding);
      res.redirect(302, authorizationUrl);
    } catch (error) {
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
      const binding = this.bindBrowser(res);
      const { authorizationUrl } = await this.launches.startStandaloneLaunch(tenant, binding);
      res.redirect(302, authorizationUrl);
    } catch (error) {
      sendErrorPage(res, error, this.logger, 'Launch refused');
    }
  }

  @Get('disclose/authorize')
  @ApiOperation({ summary: 'User-delegated disclosure: a second authorization with the disclose client' })
  async discloseAuthorize(@Req() req: Request & { user: SessionRecord }, @Res() res: Response): Promise<void> {
    try {
      const binding = this.bindBrowser(res);
      const { authorizationUrl } = await this.launches.startDisclose(req.user, binding);
      res.redirect(302, authorizationUrl);
    } catch (error) {
      sendErrorPage(res, error, this.logger, 'Authorization refused');
    }
  }

  @Public()
  @Get('callback')
  @ApiOperation({ summary: 'OAuth redirect URI: exchanges the code, then sets the session cookie (opaque, no token)' })
  async callback(@Req() req: Request, @Res() res: Response): Promise<void> {
    try {
      const binding = this.cookies.read(req, this.cookies.binding);
      if (!binding) throw new DtrError('UNAUTHENTICATED', 'this browser did not start the sign-in (or took too long)');
      const query = req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?')) : '';
      const result = await this.launches.complete(new URL(`http://callback.invalid/callback${query}`), binding);
      this.cookies.clear(res, this.cookies.binding);
      const session = 'disclosed' in result ? result.disclosed : result.session;
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
        this.cookies.options(result.session.expiresAt.getTime() - Date.now()),
      );
      res.redirect(303, '/app');
    } catch (error) {
      this.cookies.clear(res, this.cookies.binding);
      sendErrorPage(res, error, this.logger);
    }
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

  private bindBrowser(res: Response): string {
    const binding = opaqueId();
    res.cookie(this.cookies.binding, binding, this.cookies.options(ATTEMPT_COOKIE_MS));
    return binding;
  }
}
