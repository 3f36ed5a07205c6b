import { Body, Controller, Delete, Get, HttpCode, Param, Put, Query } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import { DtrError } from '@dtr/kernel';
import { type Payer, PayerRegistry } from '@dtr/payer';
import { AdminOnly } from '../admin/admin-only.decorator.js';
import { Public } from '../auth/public.decorator.js';

/** What anyone may know about a payer we support: its id and name, nothing an operator configured. */
export interface SupportedPayer {
  id: string;
  name: string;
}

/**
 * Supported payers: `{"payers":[{"id","name"}]}` as every DTR version defines the endpoint (2.0.1 and 2.1
 * specification "Supported payers", 2.2 spec-106), or the DTR 2.2 Supported Payers List (`?_format=list`): one
 * contained Organization per payer, referenced by each entry. Operator details (DTR version, endpoints) stay on
 * `GET /admin/payers`.
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2/specification.html#supported-payers
 * @see https://hl7.org/fhir/us/davinci-dtr/STU2.1/specification.html
 * @see https://hl7.org/fhir/us/davinci-dtr/2.2.0/en/specification.html (spec-101 to spec-106)
 * @see https://hl7.org/fhir/us/davinci-dtr/2.2.0/en/StructureDefinition-dtr-supported-Payers.html
 */
@ApiTags('payers')
@Controller('api/payers')
export class SupportedPayersController {
  constructor(private readonly payers: PayerRegistry) {}

  @Public()
  @Get()
  @ApiOperation({ summary: 'Payers this DTR service can talk to' })
  @ApiQuery({ name: '_format', required: false, description: '`list` for a FHIR List resource' })
  @ApiOkResponse({ description: 'Supported payers' })
  async list(@Query('_format') format: unknown): Promise<{ payers: SupportedPayer[] } | Record<string, unknown>> {
    if (format !== undefined && format !== 'json' && format !== 'list')
      throw new DtrError('INVALID_INPUT', '_format must be json or list');
    const payers = await this.payers.list();
    if (format === 'list') {
      return {
        resourceType: 'List',
        status: 'current',
        mode: 'snapshot',
        title: 'Supported payers',
        contained: payers.map((p, i) => ({
          resourceType: 'Organization',
          id: `payer${i + 1}`,
          identifier: [{ value: p.id }],
          name: p.name,
        })),
        entry: payers.map((p, i) => ({ item: { reference: `#payer${i + 1}`, display: p.name } })),
      };
    }
    return { payers: payers.map((p) => ({ id: p.id, name: p.name })) };
  }
}

/** Registering payers: operators only (bearer token). */
@AdminOnly()
@Controller('admin/payers')
export class PayersAdminController {
  constructor(private readonly payers: PayerRegistry) {}

  @Get()
  @ApiOperation({ summary: 'List registered payers' })
  list(): Promise<Payer[]> {
    return this.payers.list();
  }

  @Put(':id')
  @ApiOperation({
    summary:
      'Register or replace a payer (endpoints, our client id there, key algorithm, scopes, DTR version, coverage mapping)',
  })
  put(@Param('id') id: string, @Body() body: unknown): Promise<Payer> {
    if (!body || typeof body !== 'object' || Array.isArray(body))
      throw new DtrError('INVALID_INPUT', 'a JSON object is required');
    const input = body as Record<string, unknown>;
    if (input['id'] !== undefined && input['id'] !== id)
      throw new DtrError('INVALID_INPUT', 'id in the body differs from the URL');
    return this.payers.upsert({ ...input, id });
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Remove a payer' })
  async remove(@Param('id') id: string): Promise<void> {
    if (!(await this.payers.remove(id))) throw new DtrError('NOT_FOUND', `no payer ${id}`);
  }
}
