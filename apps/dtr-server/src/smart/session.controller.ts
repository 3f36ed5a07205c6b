import { Controller, Get, HttpCode, Injectable, Post, Req, Res } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags, ApiUnauthorizedResponse } from '@nestjs/swagger';
import { type FhirResource, parseResourceReference } from '@dtr/fhir';
import { dtrContextOf, type SessionRecord, SmartSessions, TenantRegistry } from '@dtr/smart';
import type { Request, Response } from 'express';
import { BrowserCookies } from '../auth/cookies.js';
import { CurrentSession } from '../auth/current-session.decorator.js';
import { embeddedSession } from '../auth/session-cookie.strategy.js';

export interface SessionView {
  tenant: { id: string; name: string };
  user: { fhirUser: string | null; display: string | null };
  patient: { id: string | null; display: string | null };
  encounter: string | null;
  orders: string[];
  /** Tasks the launch named (their focus/basedOn give the orders). */
  tasks: string[];
  /** True when the order is the clinician's choice in the order picker. */
  orderChosen: boolean;
  coverages: string[];
  questionnaireResponses: string[];
  questionnaires: string[];
  needPatientBanner: boolean;
  disclosure: { mode: 'user-delegated' | 'system'; singleClient: boolean; authorized: boolean };
  expiresAt: string;
}

/** Builds what the page needs to know about a signed-in session. Never a token. */
@Injectable()
export class SessionViewService {
  constructor(
    private readonly smart: SmartSessions,
    private readonly tenants: TenantRegistry,
  ) {}

  async view(session: SessionRecord): Promise<SessionView> {
    const tenant = await this.tenants.get(session.tenantId);
    const dtr = dtrContextOf(session.context);
    const [user, patient, disclosed] = await Promise.all([
      session.fhirUser ? this.display(session, session.fhirUser) : Promise.resolve(null),
      session.patient ? this.display(session, `Patient/${session.patient}`) : Promise.resolve(null),
      // Whether payer-bound writes are authorized now: the user-delegated token, or a system token actually granted.
      (tenant?.discloseMode === 'system' && !tenant.singleClient
        ? this.smart.token(session, 'disclose')
        : this.smart.access.get(session.idHash, 'disclose')
      ).then(
        () => true,
        () => false,
      ),
    ]);
    return {
      tenant: { id: session.tenantId, name: tenant?.name ?? session.tenantId },
      user: { fhirUser: session.fhirUser, display: user },
      patient: { id: session.patient, display: patient },
      encounter: session.encounter,
      ...dtr,
      needPatientBanner: session.context.needPatientBanner ?? true,
      disclosure: {
        mode: tenant?.discloseMode ?? 'user-delegated',
        singleClient: tenant?.singleClient ?? false,
        authorized: disclosed || Boolean(tenant?.singleClient),
      },
      expiresAt: session.expiresAt.toISOString(),
    };
  }

  /** A human-readable name for a Practitioner/Patient reference, read from the EHR with the session's token. */
  private async display(session: SessionRecord, given: string): Promise<string | null> {
    // An absolute fhirUser is followed only on the session's own FHIR base: tokens go nowhere else.
    const reference = given.startsWith(`${session.fhirBase}/`) ? given.slice(session.fhirBase.length + 1) : given;
    const parsed = parseResourceReference(reference);
    if (!parsed || parsed.base !== undefined || parsed.version !== undefined) return null;
    const { type, id } = parsed;
    try {
      const client = this.smart.fhirClient(session, 'supplement', { timeoutMs: 5000, retries: 0 });
      const resource = await client.read<
        FhirResource & { name?: Array<{ text?: string; given?: string[]; family?: string }> }
      >(type, id);
      const name = resource?.name?.[0];
      if (!name) return null;
      return name.text ?? ([...(name.given ?? []), name.family].filter(Boolean).join(' ') || null);
    } catch {
      return null;
    }
  }
}

/** The session API of the page. */
@ApiTags('session')
@Controller('api/session')
export class SessionController {
  constructor(
    private readonly views: SessionViewService,
    private readonly smart: SmartSessions,
    private readonly cookies: BrowserCookies,
  ) {}

  @Get()
  @ApiOperation({ summary: 'The signed-in user, patient, encounter, orders and coverage in context' })
  @ApiOkResponse({ description: 'Session context' })
  @ApiUnauthorizedResponse({ description: 'No live session' })
  get(@CurrentSession() session: SessionRecord): Promise<SessionView> {
    return this.views.view(session);
  }

  @Post('logout')
  @HttpCode(200)
  @ApiOperation({ summary: 'Ends the session and revokes its tokens at the EHR when it has a revocation endpoint' })
  async logout(
    @CurrentSession() session: SessionRecord,
    @Req() req: Request,
    @Res({ passthrough: true }) res: Response,
  ): Promise<{ loggedOut: true; revokedAtEhr: boolean }> {
    const { revokedAtEhr } = await this.smart.logout(session);
    this.cookies.clear(res, this.cookies.session, embeddedSession(req));
    return { loggedOut: true, revokedAtEhr };
  }
}
