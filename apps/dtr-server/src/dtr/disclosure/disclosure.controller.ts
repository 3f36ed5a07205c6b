import { Body, Controller, Get, HttpCode, Param, Post, Res } from '@nestjs/common';
import {
  ApiAcceptedResponse,
  ApiBody,
  ApiConflictResponse,
  ApiForbiddenResponse,
  ApiNotFoundResponse,
  ApiOkResponse,
  ApiOperation,
  ApiResponse,
  ApiTags,
} from '@nestjs/swagger';
import type { SessionRecord } from '@dtr/smart';
import type { Response } from 'express';
import { CurrentSession } from '../../auth/current-session.decorator.js';
import type { OperationOutcome } from '../../http/operation-outcome.js';
import { type DisclosureReview, DisclosureUseCase } from './disclosure.usecase.js';
import type { SubmissionView } from './submission-view.js';

/** Sending a completed response to the payer: the review, the send, and the session's submissions. */
@ApiTags('disclosure')
@Controller('api/session')
export class DisclosureController {
  constructor(private readonly disclosure: DisclosureUseCase) {}

  @Get('questionnaire-responses/:id/disclosure')
  @ApiOperation({
    summary: 'What would leave for the payer: every answer and resource, sensitive ones flagged for a choice',
  })
  @ApiOkResponse({ description: 'DisclosureReview' })
  @ApiConflictResponse({ description: 'The response is not completed (and stored in the EHR) yet' })
  review(@CurrentSession() session: SessionRecord, @Param('id') id: string): Promise<DisclosureReview> {
    return this.disclosure.review(session, id);
  }

  @Post('questionnaire-responses/:id/$send')
  @HttpCode(202)
  @ApiOperation({
    summary:
      'Send to the payer: the copy is written into the EHR (disclose identity) and verified, then queued; once per response and payer',
  })
  @ApiBody({
    description:
      '{ choices: { "item:<linkId>" | "resource:<Type/id>": "include" | "withhold" } } for every flagged entry',
    schema: { type: 'object', properties: { choices: { type: 'object' } } },
  })
  @ApiAcceptedResponse({ description: 'SubmissionView (queued for delivery); a repeat answers the same submission' })
  @ApiResponse({
    status: 400,
    description: 'A flagged answer or resource has no choice, or a choice names nothing flagged',
  })
  @ApiForbiddenResponse({ description: 'No disclosure authorization, or not the disclosure identity' })
  @ApiResponse({ status: 502, description: 'The EHR did not take or verify the copy: nothing was sent; retry later' })
  async send(
    @CurrentSession() session: SessionRecord,
    @Param('id') id: string,
    @Body() body: unknown,
    @Res({ passthrough: true }) res: Response,
  ): Promise<SubmissionView | OperationOutcome> {
    const outcome = await this.disclosure.send(session, id, body);
    if (outcome.kind === 'existing') res.status(200);
    if (outcome.kind !== 'write-back-failed') return outcome.submission;
    res.status(outcome.status).type('application/fhir+json');
    return {
      resourceType: 'OperationOutcome',
      issue: [
        {
          severity: 'error',
          code: 'transient',
          diagnostics: `${outcome.message} (submission ${outcome.submission.id}; sending again retries it)`,
        },
      ],
    };
  }

  @Get('submissions')
  @ApiOperation({ summary: "This session's submissions and their states" })
  @ApiOkResponse({ description: '{ submissions: SubmissionView[] }' })
  list(@CurrentSession() session: SessionRecord): Promise<{ submissions: SubmissionView[] }> {
    return this.disclosure.list(session);
  }

  @Get('submissions/:id')
  @ApiOperation({ summary: 'One submission, with the payer answer once there is one' })
  @ApiNotFoundResponse({ description: 'Not a submission of this session' })
  get(@CurrentSession() session: SessionRecord, @Param('id') id: string): Promise<SubmissionView> {
    return this.disclosure.get(session, id);
  }
}
