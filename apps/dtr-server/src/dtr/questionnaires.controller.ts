import { Controller, HttpCode, Post, Req } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { SessionRequest } from '../smart/session.controller.js';
import { type PreparedQuestionnaires, PrepareQuestionnairesUseCase } from './prepare-questionnaires.usecase.js';

@ApiTags('dtr')
@Controller('api/session/questionnaires')
export class QuestionnairesController {
  constructor(private readonly prepare: PrepareQuestionnairesUseCase) {}

  @Post()
  @HttpCode(200)
  @ApiOperation({
    summary: "Retrieve the payer's questionnaires for the order in context and prefill them from the EHR",
  })
  @ApiOkResponse({ description: 'Prefilled QuestionnaireResponses, with the issues of the package and of the prefill' })
  run(@Req() req: SessionRequest): Promise<PreparedQuestionnaires> {
    return this.prepare.run(req.user);
  }
}
