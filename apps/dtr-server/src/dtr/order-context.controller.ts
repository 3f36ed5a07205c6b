import { Body, Controller, Get, HttpCode, Post } from '@nestjs/common';
import {
  ApiBody,
  ApiConflictResponse,
  ApiForbiddenResponse,
  ApiOkResponse,
  ApiOperation,
  ApiTags,
} from '@nestjs/swagger';
import type { ChosenContext, SessionRecord } from '@dtr/smart';
import { CurrentSession } from '../auth/current-session.decorator.js';
import { type OrderCandidates, OrderCandidatesService } from './order-candidates.service.js';

/** The order picker's API: when the launch named no order, the clinician (or an API user) chooses one. */
@ApiTags('session')
@Controller('api/session')
export class OrderContextController {
  constructor(private readonly orders: OrderCandidatesService) {}

  @Get('order-candidates')
  @ApiOperation({
    summary:
      "The patient's orders that may need documentation (active/draft/on-hold requests, booked/proposed/pending appointments, in-progress/planned encounters) and in-progress QuestionnaireResponses to resume, searched on the EHR",
  })
  @ApiOkResponse({
    description:
      '{ orderInContext, chosen, candidates: [{ reference, resourceType, status, description, date, order? }], issues }',
  })
  candidates(@CurrentSession() session: SessionRecord): Promise<OrderCandidates> {
    return this.orders.candidates(session);
  }

  @Post('context')
  @HttpCode(200)
  @ApiOperation({
    summary:
      'Choose the order (a reference order-candidates listed): read again from the EHR, checked to be the patient’s, recorded on the session; then POST /api/session/questionnaires',
  })
  @ApiBody({ schema: { type: 'object', properties: { order: { type: 'string', example: 'DeviceRequest/123' } } } })
  @ApiOkResponse({ description: '{ chosen: { order, questionnaireResponse? } }' })
  @ApiForbiddenResponse({ description: 'OperationOutcome: not an order of the patient in context' })
  @ApiConflictResponse({ description: 'OperationOutcome: the launch named the order, or the order is not pickable' })
  async choose(@CurrentSession() session: SessionRecord, @Body() body: unknown): Promise<{ chosen: ChosenContext }> {
    const order = body && typeof body === 'object' ? (body as Record<string, unknown>)['order'] : undefined;
    const { chosen } = await this.orders.choose(session, order);
    return { chosen };
  }
}
