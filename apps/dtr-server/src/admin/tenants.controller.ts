import { Body, Controller, Delete, Get, HttpCode, Param, Put } from '@nestjs/common';
import { ApiOkResponse, ApiOperation } from '@nestjs/swagger';
import { DtrError } from '@dtr/kernel';
import { TenantRegistry, type TenantView } from '@dtr/smart';
import { AdminOnly } from './admin-only.decorator.js';

/** Registering EHRs: operators only (bearer token), never the browser session. Secrets are write-only. */
@AdminOnly()
@Controller('admin/tenants')
export class TenantsController {
  constructor(private readonly tenants: TenantRegistry) {}

  @Get()
  @ApiOperation({ summary: 'List registered EHR tenants (no secrets)' })
  @ApiOkResponse({ description: 'Tenants' })
  list(): Promise<TenantView[]> {
    return this.tenants.list();
  }

  @Get(':id')
  @ApiOperation({ summary: 'One EHR tenant (no secrets)' })
  async get(@Param('id') id: string): Promise<TenantView> {
    const tenant = await this.tenants.get(id);
    if (!tenant) throw new DtrError('NOT_FOUND', `no tenant ${id}`);
    return tenant;
  }

  @Put(':id')
  @ApiOperation({ summary: 'Register or replace an EHR tenant with its supplement and disclose registrations' })
  put(@Param('id') id: string, @Body() body: unknown): Promise<TenantView> {
    if (!body || typeof body !== 'object' || Array.isArray(body))
      throw new DtrError('INVALID_INPUT', 'a JSON object is required');
    const input = body as Record<string, unknown>;
    if (input['id'] !== undefined && input['id'] !== id)
      throw new DtrError('INVALID_INPUT', 'id in the body differs from the URL');
    return this.tenants.upsert({ ...input, id });
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Remove an EHR tenant (its sessions end)' })
  async remove(@Param('id') id: string): Promise<void> {
    if (!(await this.tenants.remove(id))) throw new DtrError('NOT_FOUND', `no tenant ${id}`);
  }
}
