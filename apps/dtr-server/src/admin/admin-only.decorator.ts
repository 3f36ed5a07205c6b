import { applyDecorators, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiTags } from '@nestjs/swagger';
import { Public } from '../auth/public.decorator.js';
import { AdminGuard } from './admin.guard.js';

/** An operator route: no browser session, the admin bearer token instead (see AdminGuard). */
export const AdminOnly = (): ClassDecorator & MethodDecorator =>
  applyDecorators(ApiTags('admin'), ApiBearerAuth(), Public(), UseGuards(AdminGuard));
