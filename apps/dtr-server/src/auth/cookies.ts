import type { CookieOptions, Request, Response } from 'express';

/**
 * Browser cookies. The session cookie holds only an opaque id (no token); HttpOnly, SameSite=Lax, Secure except
 * on plain-http loopback (development), where the `__Host-` prefix cannot be used.
 *
 * For a tenant whose EHR embeds the app in a frame (`frameAncestors`), the app runs in a third-party context, where
 * a SameSite=Lax cookie is neither set nor sent: its cookies are `SameSite=None; Secure; Partitioned` instead. Secure
 * also on http loopback (browsers treat http://localhost and 127.0.0.1 as secure contexts); Partitioned (CHIPS) keeps
 * the cookie in the EHR's top-level site's jar, so it works where third-party cookies are blocked and is never sent
 * when the app is framed by another site.
 */
export class BrowserCookies {
  readonly session: string;
  readonly binding: string;

  constructor(private readonly secure: boolean) {
    this.session = secure ? '__Host-dtr_session' : 'dtr_session';
    this.binding = secure ? '__Host-dtr_launch' : 'dtr_launch';
  }

  /** `embedded`: the tenant lets its EHR frame the app (see the class comment). */
  options(maxAgeMs?: number, embedded = false): CookieOptions {
    return {
      httpOnly: true,
      secure: this.secure || embedded,
      sameSite: embedded ? 'none' : 'lax',
      ...(embedded ? { partitioned: true } : {}),
      path: '/',
      ...(maxAgeMs ? { maxAge: maxAgeMs } : {}),
    };
  }

  read(req: Request, name: string): string | undefined {
    const value = (req.cookies as Record<string, unknown> | undefined)?.[name];
    return typeof value === 'string' && /^[A-Za-z0-9_-]{16,128}$/.test(value) ? value : undefined;
  }

  clear(res: Response, name: string, embedded = false): void {
    res.clearCookie(name, this.options(undefined, embedded));
  }
}
