import { Controller, HttpCode, Post } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { type PreparedQuestionnaires, PrepareQuestionnairesUseCase } from './prepare-questionnaires.usecase.js';
import type { SessionRecord } from '@dtr/smart';
import { CurrentSession } from '../auth/current-session.decorator.js';

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
  run(@CurrentSession() session: SessionRecord): Promise<PreparedQuestionnaires> {
    return this.prepare.run(session);
  }
}
