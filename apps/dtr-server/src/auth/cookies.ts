import type { CookieOptions, Request, Response } from 'express';

/**
 * Browser cookies. The session cookie holds only an opaque id (no token); HttpOnly, SameSite=Lax, Secure except
 * on plain-http loopback (development), where the `__Host-` prefix cannot be used.
 */
export class BrowserCookies {
  readonly session: string;
  readonly binding: string;

  constructor(private readonly secure: boolean) {
    this.session = secure ? '__Host-dtr_session' : 'dtr_session';
    this.binding = secure ? '__Host-dtr_launch' : 'dtr_launch';
  }

  options(maxAgeMs?: number): CookieOptions {
    return {
      httpOnly: true,
      secure: this.secure,
      sameSite: 'lax',
      path: '/',
      ...(maxAgeMs ? { maxAge: maxAgeMs } : {}),
    };
  }

  read(req: Request, name: string): string | undefined {
    const value = (req.cookies as Record<string, unknown> | undefined)?.[name];
    return typeof value === 'string' && /^[A-Za-z0-9_-]{16,128}$/.test(value) ? value : undefined;
  }

  clear(res: Response, name: string): void {
    res.clearCookie(name, this.options());
  }
}
