import { type CanActivate, type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { DtrError } from '@dtr/kernel';
import { sha256, sameHash } from '@dtr/smart';
import type { Request } from 'express';
import { APP_CONFIG, type AppConfig } from '../config/app.config.js';

/**
 * The admin API is for operators, not browsers: a bearer token from configuration (DTR_ADMIN_TOKEN), compared in
 * constant time. Without one configured the admin API is off (the CLI still works on the database).
 */
@Injectable()
export class AdminGuard implements CanActivate {
  private readonly expected: string | undefined;

  constructor(@Inject(APP_CONFIG) config: AppConfig) {
    this.expected = config.adminToken ? sha256(config.adminToken) : undefined;
  }

  canActivate(context: ExecutionContext): boolean {
    if (!this.expected) throw new DtrError('FORBIDDEN', 'the admin API is disabled: set DTR_ADMIN_TOKEN to enable it');
    const header = context.switchToHttp().getRequest<Request>().headers.authorization ?? '';
    const match = /^Bearer ([\x21-\x7e]{16,512})$/.exec(header);
    if (!match || !sameHash(sha256(match[1]!), this.expected)) {
      throw new DtrError('UNAUTHENTICATED', 'admin API: a valid bearer token is required');
    }
    return true;
  }
}
