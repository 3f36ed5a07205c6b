import { Injectable } from '@nestjs/common';
import { PassportStrategy } from '@nestjs/passport';
import { SessionStore, type SessionRecord } from '@dtr/smart';
import type { Request } from 'express';
import { BrowserCookies } from './cookies.js';

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
  ) {
    super();
  }

  async validate(req: Request): Promise<SessionRecord | false> {
    const id = this.cookies.read(req, this.cookies.session);
    if (!id) return false;
    const session = await this.sessions.find(id);
    if (session) (req as Request & { sessionId?: string }).sessionId = id;
    // A cookie whose session ended (idle, past its lifetime, logged out, replaced by a newer launch).
    else (req as Request & { sessionEnded?: boolean }).sessionEnded = true;
    return session ?? false;
  }
}
