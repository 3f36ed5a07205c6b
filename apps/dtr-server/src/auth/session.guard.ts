import { type ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { AuthGuard } from '@nestjs/passport';
import { DtrError } from '@dtr/kernel';
import { IS_PUBLIC } from './public.decorator.js';

/** Global guard: every route needs a live browser session unless it is marked @Public(). */
@Injectable()
export class SessionGuard extends AuthGuard('session') {
  constructor(private readonly reflector: Reflector) {
    super();
  }

  override canActivate(context: ExecutionContext) {
    const isPublic = this.reflector.getAllAndOverride<boolean>(IS_PUBLIC, [context.getHandler(), context.getClass()]);
    return isPublic ? true : super.canActivate(context);
  }

  override handleRequest<T>(error: unknown, user: T, _info: unknown, context: ExecutionContext): T {
    if (error) throw error;
    if (!user) {
      const ended = context.switchToHttp().getRequest<{ sessionEnded?: boolean }>().sessionEnded;
      throw new DtrError(
        'UNAUTHENTICATED',
        ended
          ? 'this session has expired (unused for too long, past its lifetime, or signed out): launch the app again from the EHR'
          : 'no signed-in session: launch the app from the EHR',
      );
    }
    return user;
  }
}
