import { Body, Controller, Get, HttpCode, Param, Post, Put, Res } from '@nestjs/common';
import {
  ApiBody,
  ApiConflictResponse,
  ApiForbiddenResponse,
  ApiNotFoundResponse,
  ApiOkResponse,
  ApiOperation,
  ApiResponse,
  ApiTags,
  ApiUnprocessableEntityResponse,
} from '@nestjs/swagger';
import type { Response } from 'express';
import type { OperationOutcome } from '../../http/operation-outcome.js';
import type { FormSummary, FormView } from './form-view.js';
import { FormsUseCase } from './forms.usecase.js';
import { AdaptiveFormsUseCase, type NextQuestionOutcome } from './adaptive-forms.usecase.js';
import type { SessionRecord } from '@dtr/smart';
import { CurrentSession } from '../../auth/current-session.decorator.js';

const QR_BODY = {
  description: 'A QuestionnaireResponse (application/json or application/fhir+json)',
  schema: { type: 'object', properties: { resourceType: { type: 'string', example: 'QuestionnaireResponse' } } },
};

/** A save whose form rules (the payer's FHIRPath) ran past the deadline: see FormRulesPool. */
const RULES_TIMEOUT =
  "OperationOutcome (timeout): the payer's rules of the questionnaire did not finish within the deadline; nothing was " +
  'stored here or in the EHR, the draft saved before stands';

/** The form page's API: the session's questionnaire responses, drafts and completion. */
@ApiTags('forms')
@Controller('api/session/questionnaire-responses')
export class FormsController {
  constructor(
    private readonly forms: FormsUseCase,
    private readonly adaptive: AdaptiveFormsUseCase,
  ) {}

  @Get()
  @ApiOperation({ summary: "This session's questionnaire responses with their status and where the EHR holds them" })
  @ApiOkResponse({ description: '{ responses: [{ id, questionnaire, status, payer, ehr, updatedAt }] }' })
  list(@CurrentSession() session: SessionRecord): Promise<{ responses: FormSummary[] }> {
    return this.forms.list(session);
  }

  @Get(':id')
  @ApiOperation({ summary: 'One form: Questionnaire, current response, prefill issues, answer origins and options' })
  @ApiOkResponse({ description: 'FormView' })
  @ApiNotFoundResponse({ description: 'Not a form of this session' })
  get(@CurrentSession() session: SessionRecord, @Param('id') id: string): Promise<FormView> {
    return this.forms.view(session, id);
  }

  @Put(':id')
  @ApiOperation({
    summary: 'Save a draft: validated, recomputed and origin-tagged by the server, then stored in the EHR',
  })
  @ApiBody(QR_BODY)
  @ApiOkResponse({ description: 'FormView of the saved draft (in-progress)' })
  @ApiUnprocessableEntityResponse({ description: 'OperationOutcome, one issue per refused item; nothing stored' })
  @ApiConflictResponse({
    description:
      'FormView with `conflict`: the EHR holds a version changed by someone else; or an OperationOutcome when a save of this form is still being checked',
  })
  @ApiForbiddenResponse({ description: "The response's subject is not the session's patient" })
  @ApiResponse({ status: 502, description: 'OperationOutcome: the EHR write failed; the draft is kept here' })
  @ApiResponse({ status: 503, description: 'OperationOutcome: the EHR was unavailable; the draft is kept here' })
  @ApiResponse({ status: 504, description: RULES_TIMEOUT })
  async save(
    @CurrentSession() session: SessionRecord,
    @Param('id') id: string,
    @Body() body: unknown,
    @Res({ passthrough: true }) res: Response,
  ): Promise<FormView | OperationOutcome> {
    return answer(res, await this.forms.save(session, id, body));
  }

  @Post(':id/$next-question')
  @HttpCode(200)
  @ApiOperation({
    summary:
      "Adaptive questionnaire: the answers so far (saved first) go to the payer's $next-question; its next questions " +
      'come back prefilled from the EHR, or the payer says the questionnaire is complete; then stored in the EHR',
  })
  @ApiBody({ ...QR_BODY, required: false })
  @ApiOkResponse({ description: 'FormView with the next questions, or completed (stored in the EHR)' })
  @ApiUnprocessableEntityResponse({ description: 'OperationOutcome: an answer is refused or a question is unanswered' })
  @ApiConflictResponse({ description: 'Not an adaptive questionnaire, or already completed' })
  @ApiResponse({ status: 502, description: 'OperationOutcome: the payer refused or failed (or the EHR write failed)' })
  @ApiResponse({
    status: 504,
    description:
      'OperationOutcome: the payer did not answer in time, or its form rules did not finish; answers kept here',
  })
  async nextQuestion(
    @CurrentSession() session: SessionRecord,
    @Param('id') id: string,
    @Body() body: unknown,
    @Res({ passthrough: true }) res: Response,
  ): Promise<FormView | OperationOutcome> {
    return answer(res, await this.adaptive.next(session, id, body));
  }

  @Post(':id/$complete')
  @HttpCode(200)
  @ApiOperation({ summary: 'Complete: refused while a required enabled item is empty; optional body saved first' })
  @ApiBody({ ...QR_BODY, required: false })
  @ApiOkResponse({ description: 'FormView with status completed (stored in the EHR)' })
  @ApiUnprocessableEntityResponse({ description: 'OperationOutcome naming each item that prevents completion' })
  @ApiConflictResponse({
    description: 'FormView with `conflict`; or an OperationOutcome when a save of this form is still being checked',
  })
  @ApiResponse({ status: 502, description: 'OperationOutcome: not completed, the EHR write failed; draft kept' })
  @ApiResponse({ status: 504, description: RULES_TIMEOUT })
  async complete(
    @CurrentSession() session: SessionRecord,
    @Param('id') id: string,
    @Body() body: unknown,
    @Res({ passthrough: true }) res: Response,
  ): Promise<FormView | OperationOutcome> {
    return answer(res, await this.forms.complete(session, id, body));
  }
}

/** Each outcome's HTTP answer. @see https://hl7.org/fhir/R4/operationoutcome.html */
function answer(res: Response, outcome: NextQuestionOutcome): FormView | OperationOutcome {
  switch (outcome.kind) {
    case 'ok':
      return outcome.view;
    case 'conflict':
      res.status(409);
      return outcome.view;
    case 'invalid':
      res.status(422).type('application/fhir+json');
      return {
        resourceType: 'OperationOutcome',
        issue: outcome.problems.map((p) => ({
          severity: 'error' as const,
          code: p.code === 'required-missing' ? 'required' : p.code === 'unknown-item' ? 'not-found' : 'invalid',
          diagnostics: p.message,
          expression: [p.linkId],
          details: { coding: [{ system: 'urn:dtr-backend:form-problem', code: p.code }], text: p.message },
        })),
      } as OperationOutcome;
    case 'payer-failed':
      res.status(outcome.status).type('application/fhir+json');
      return {
        resourceType: 'OperationOutcome',
        issue: [
          { severity: 'error', code: outcome.status === 504 ? 'timeout' : 'transient', diagnostics: outcome.message },
        ],
      };
    case 'ehr-failed':
      res.status(outcome.status).type('application/fhir+json');
      return {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'transient', diagnostics: outcome.message }],
      };
  }
}
