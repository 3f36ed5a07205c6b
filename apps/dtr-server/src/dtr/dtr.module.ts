import { Module } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import { PackageCache } from '@dtr/payer';
import type { DataSource } from 'typeorm';
import { PayersModule } from '../payers/payers.module.js';
import { SmartModule } from '../smart/smart.module.js';
import { PrepareQuestionnairesUseCase } from './prepare-questionnaires.usecase.js';
import { QuestionnairesController } from './questionnaires.controller.js';
import { QuestionnairesPageController } from './questionnaires-page.controller.js';

/** The DTR flow of a session: package retrieval and prefill (then completion and disclosure). */
@Module({
  imports: [SmartModule, PayersModule],
  controllers: [QuestionnairesController, QuestionnairesPageController],
  providers: [
    { provide: PackageCache, inject: [getDataSourceToken()], useFactory: (ds: DataSource) => new PackageCache(ds) },
    PrepareQuestionnairesUseCase,
  ],
})
export class DtrModule {}
