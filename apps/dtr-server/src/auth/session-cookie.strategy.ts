import { Injectable } from '@nestjs/common';
import { PassportStrategy } from '@nestjs/passport';
import { SessionStore, type SessionRecord, TenantRegistry } from '@dtr/smart';
import type { Request } from 'express';
import { allowFraming } from '../http/content-security-policy.js';
import { BrowserCookies } from './cookies.js';

/** A request the session guard authenticated: the origins its tenant lets frame the app (empty: none). */
export type SessionRequest = Request & { sessionId?: string; frameAncestors?: string[]; sessionEnded?: boolean };

/** Whether the session's cookies are the embedded kind (SameSite=None; Partitioned): see BrowserCookies. */
export function embeddedSession(req: Request): boolean {
  return ((req as SessionRequest).frameAncestors?.length ?? 0) > 0;
}

type Verify = (req: Request, done: (error: unknown, user?: SessionRecord | false) => void) => void;

/** A passport strategy that authenticates a request by our opaque session cookie. */
class CookieStrategy {
  name = 'session';
  // Assigned by passport when the strategy runs.
  declare success: (user: unknown) => void;
  declare fail: (status?: number) => void;
  declare error: (error: unknown) => void;

  constructor(private readonly verify: Verify) {}

  authenticate(req: Request): void {
    this.verify(req, (error, user) => {
      if (error) this.error(error);
      else if (user) this.success(user);
      else this.fail(401);
    });
  }
}

@Injectable()
export class SessionCookieStrategy extends PassportStrategy(CookieStrategy, 'session') {
  constructor(
    private readonly sessions: SessionStore,
    private readonly cookies: BrowserCookies,
    private readonly tenants: TenantRegistry,
  ) {
    super();
  }

  /** The session of the cookie; its tenant's frame policy is applied to the response (see content-security-policy.ts). */
  async validate(req: SessionRequest): Promise<SessionRecord | false> {
    const id = this.cookies.read(req, this.cookies.session);
    if (!id) return false;
    const session = await this.sessions.find(id);
    if (!session) {
      // A cookie whose session ended (idle, past its lifetime, logged out, replaced by a newer launch).
      req.sessionEnded = true;
      return false;
    }
    req.sessionId = id;
    req.frameAncestors = await this.tenants.frameAncestors(session.tenantId);
    if (req.res) allowFraming(req.res, req.frameAncestors);
    return session;
  }
}
