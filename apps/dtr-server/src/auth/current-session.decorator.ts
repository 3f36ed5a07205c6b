import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { SessionRecord } from '@dtr/smart';

/** The browser session the global session guard authenticated (the guard runs first, so it is always there). */
export const CurrentSession = createParamDecorator(
  (_data: unknown, context: ExecutionContext): SessionRecord =>
    context.switchToHttp().getRequest<{ user: SessionRecord }>().user,
);
