import { Module } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import { PackageCache } from '@dtr/payer';
import type { DataSource } from 'typeorm';
import { APP_CONFIG, type AppConfig } from '../config/app.config.js';
import { JsonLogger } from '../logging/json-logger.js';
import { PayersModule } from '../payers/payers.module.js';
import { SmartModule } from '../smart/smart.module.js';
import { Clock } from '@dtr/kernel';
import { SecretBox } from '@dtr/smart';
import { FormSessionRepository } from './forms/form-session.repository.js';
import { FormSessionsService } from './forms/form-sessions.service.js';
import { FormPageController } from './forms/form-page.controller.js';
import { FormsController } from './forms/forms.controller.js';
import { FormsUseCase } from './forms/forms.usecase.js';
import { PrefillPool } from './prefill-pool/prefill-pool.js';
import { PrepareQuestionnairesUseCase } from './prepare-questionnaires.usecase.js';
import { QuestionnairesController } from './questionnaires.controller.js';
import { QuestionnairesPageController } from './questionnaires-page.controller.js';

/** The DTR flow of a session: package retrieval and prefill (then completion and disclosure). */
@Module({
  imports: [SmartModule, PayersModule],
  controllers: [QuestionnairesController, QuestionnairesPageController, FormsController, FormPageController],
  providers: [
    { provide: PackageCache, inject: [getDataSourceToken()], useFactory: (ds: DataSource) => new PackageCache(ds) },
    {
      // Terminated on application shutdown (Nest calls its onApplicationShutdown).
      provide: PrefillPool,
      inject: [APP_CONFIG, JsonLogger],
      useFactory: (config: AppConfig, logger: JsonLogger) => {
        const pool = new PrefillPool({
          size: config.prefillWorkers,
          onWorkerExit: ({ threadId, exitCode, reason }) =>
            logger.entry(
              'warn',
              'prefill worker stopped; replaced',
              { threadId, exitCode, ...(reason ? { reason } : {}) },
              'PrefillPool',
            ),
        });
        logger.entry(
          'info',
          pool.size > 0 ? 'prefill workers started' : 'prefill runs in the request thread',
          { workers: pool.size },
          'PrefillPool',
        );
        return pool;
      },
    },
    PrepareQuestionnairesUseCase,
    {
      provide: FormSessionRepository,
      inject: [getDataSourceToken(), SecretBox, Clock],
      useFactory: (ds: DataSource, box: SecretBox, clock: Clock) => new FormSessionRepository(ds, box, clock),
    },
    FormSessionsService,
    FormsUseCase,
  ],
})
export class DtrModule {}
