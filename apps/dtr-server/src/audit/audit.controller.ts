import { Controller, Get, Query, Res } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiQuery } from '@nestjs/swagger';
import { AuditLog, type AuditFilter, toFhirAuditEvent } from '@dtr/audit';
import { DtrError } from '@dtr/kernel';
import type { Response } from 'express';
import { AdminOnly } from '../admin/admin-only.decorator.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Reads the audit filter from query parameters, refusing what is malformed (a clear 400 naming the parameter). */
export function auditFilterOf(query: Record<string, unknown>): AuditFilter {
  const text = (name: string, pattern: RegExp): string | undefined => {
    const value = query[name];
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || !pattern.test(value))
      throw new DtrError('INVALID_INPUT', `${name} is not valid`, { details: { parameter: name } });
    return value;
  };
  const date = (name: string): Date | undefined => {
    const value = text(name, /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?$/);
    if (value === undefined) return undefined;
    const parsed = new Date(value);
    if (Number.isNaN(parsed.getTime())) throw new DtrError('INVALID_INPUT', `${name} is not a date`);
    return parsed;
  };
  const patient = text('patient', /^(?!\.+(?:\/|$))[A-Za-z0-9\-.]{1,64}$/);
  const session = text('session', /^[A-Za-z0-9_-]{8,128}$/);
  const submission = text('submission', UUID);
  const from = date('from');
  const to = date('to');
  const count = text('_count', /^\d{1,5}$/);
  const after = text('after', /^\d{1,18}$/);
  return {
    ...(patient ? { patient: `Patient/${patient}` } : {}),
    ...(session ? { sessionIdHash: session } : {}),
    ...(submission ? { submissionId: submission } : {}),
    ...(from ? { from } : {}),
    ...(to ? { to } : {}),
    ...(count ? { limit: Number(count) } : {}),
    ...(after ? { afterSeq: Number(after) } : {}),
  };
}

/** The audit trail for operators: a FHIR searchset Bundle of BALP-shaped AuditEvents, oldest first. */
@AdminOnly()
@Controller('admin/audit')
export class AuditController {
  constructor(private readonly audit: AuditLog) {}

  @Get()
  @ApiOperation({ summary: 'Audit events (FHIR Bundle of AuditEvent), filtered by patient, session, submission, time' })
  @ApiQuery({ name: 'patient', required: false, description: 'Patient id (hashed here; events never hold it)' })
  @ApiQuery({ name: 'session', required: false })
  @ApiQuery({ name: 'submission', required: false })
  @ApiQuery({ name: 'from', required: false, description: 'ISO date or instant, inclusive' })
  @ApiQuery({ name: 'to', required: false, description: 'ISO date or instant, exclusive' })
  @ApiQuery({ name: '_count', required: false })
  @ApiQuery({ name: 'after', required: false, description: 'Events after this sequence number (next page)' })
  @ApiOkResponse({ description: 'Bundle (searchset) of AuditEvent' })
  async search(@Query() query: Record<string, unknown>, @Res({ passthrough: true }) res: Response): Promise<unknown> {
    const events = await this.audit.search(auditFilterOf(query));
    res.type('application/fhir+json');
    return auditBundle(events);
  }
}

function auditBundle(events: Awaited<ReturnType<AuditLog['search']>>): Record<string, unknown> {
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total: events.length,
    ...(events.length > 0
      ? { meta: { tag: [{ system: 'urn:dtr-backend:last-seq', code: String(events.at(-1)!.seq) }] } }
      : {}),
    entry: events.map((e) => ({ resource: toFhirAuditEvent(e, 'dtr-backend') })),
  };
}
