import { Module } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import { AuditLog } from '@dtr/audit';
import { Outbox, SubmissionRepository } from '@dtr/disclosure';
import type { CompileCqlOptions } from '@dtr/fhir';
import { PayerRegistry } from '@dtr/payer';
import type { DataSource } from 'typeorm';
import { APP_CONFIG, type AppConfig } from '../config/app.config.js';
import { JsonLogger } from '../logging/json-logger.js';
import { PayersModule } from '../payers/payers.module.js';
import { fromServices, OUTBOUND_POLICY, SmartModule } from '../smart/smart.module.js';
import { Clock } from '@dtr/kernel';
import { BackendServicesClient, type OutboundPolicy, SecretBox } from '@dtr/smart';
import { DeliveryWorker } from './disclosure/delivery.worker.js';
import { DisclosureController } from './disclosure/disclosure.controller.js';
import { DisclosureUseCase } from './disclosure/disclosure.usecase.js';
import { PayerDelivery } from './disclosure/payer-delivery.js';
import { SendPageController } from './disclosure/send-page.controller.js';
import { FormSessionRepository } from './forms/form-session.repository.js';
import { FormSessionsService } from './forms/form-sessions.service.js';
import { FormPageController } from './forms/form-page.controller.js';
import { FormsController } from './forms/forms.controller.js';
import { FormsUseCase } from './forms/forms.usecase.js';
import { FormRulesPool } from './forms/form-rules-pool.js';
import { AdaptiveFormsUseCase } from './forms/adaptive-forms.usecase.js';
import { CQL_COMPILE, CqlCompilePool } from './prefill-pool/cql-compile-pool.js';
import { PrefillPool } from './prefill-pool/prefill-pool.js';
import type { WorkerExit } from './payer-logic-pool/payer-logic-pool.js';
import { PayerClients } from './payer-clients.js';
import { PrepareQuestionnairesUseCase } from './prepare-questionnaires.usecase.js';
import { OrderContextController } from './order-context.controller.js';
import { QuestionnairesController } from './questionnaires.controller.js';
import { QuestionnairesPageController } from './questionnaires-page.controller.js';

/** The DTR flow of a session: package retrieval and prefill (then completion and disclosure). */
@Module({
  imports: [SmartModule, PayersModule],
  controllers: [
    QuestionnairesController,
    OrderContextController,
    QuestionnairesPageController,
    FormsController,
    FormPageController,
    DisclosureController,
    SendPageController,
  ],
  providers: [
    {
      // Terminated on application shutdown (Nest calls its onApplicationShutdown).
      provide: PrefillPool,
      inject: [APP_CONFIG, JsonLogger],
      useFactory: (config: AppConfig, logger: JsonLogger) => {
        const pool = new PrefillPool(poolOptions(config, logger, 'prefill worker', 'PrefillPool'));
        logger.entry(
          'info',
          pool.size > 0 ? 'prefill workers started' : 'prefill runs in the request thread',
          { workers: pool.size, ...config.prefillLimits },
          'PrefillPool',
        );
        return pool;
      },
    },
    {
      // The form rules of every save (the payer's FHIRPath) run in worker processes under the prefill's limits.
      provide: FormRulesPool,
      inject: [APP_CONFIG, JsonLogger],
      useFactory: (config: AppConfig, logger: JsonLogger) =>
        new FormRulesPool(poolOptions(config, logger, 'form rules worker', 'FormRulesPool')),
    },
    {
      // CQL-only payer libraries are translated in a worker process of their own (started on first use, killed on
      // application shutdown), under the prefill workers' heap and stack limits and queue cap.
      provide: CqlCompilePool,
      inject: [APP_CONFIG, JsonLogger],
      useFactory: (config: AppConfig, logger: JsonLogger) =>
        new CqlCompilePool({
          deadlineMs: config.cqlCompile.deadlineMs,
          queueMax: config.prefillLimits.queueMax,
          memoryMb: config.prefillLimits.workerMemoryMb,
          stackMb: config.prefillLimits.workerStackMb,
          onWorkerExit: logExit(logger, 'CQL translator', 'CqlCompilePool'),
        }),
    },
    {
      provide: CQL_COMPILE,
      inject: [CqlCompilePool, APP_CONFIG],
      useFactory: (compiler: CqlCompilePool, config: AppConfig): CompileCqlOptions => ({
        translate: compiler.translate,
        maxCqlBytes: config.cqlCompile.maxBytes,
      }),
    },
    PrepareQuestionnairesUseCase,
    PayerClients,
    {
      provide: FormSessionRepository,
      inject: [getDataSourceToken(), SecretBox, Clock],
      useFactory: (ds: DataSource, box: SecretBox, clock: Clock) => new FormSessionRepository(ds, box, clock),
    },
    FormSessionsService,
    FormsUseCase,
    AdaptiveFormsUseCase,
    fromServices(SubmissionRepository, 'submissions'),
    fromServices(Outbox, 'outbox'),
    {
      // Started on bootstrap, stopped (in-flight attempt finished) on shutdown.
      provide: DeliveryWorker,
      inject: [Outbox, PayerRegistry, BackendServicesClient, OUTBOUND_POLICY, AuditLog, JsonLogger, APP_CONFIG],
      useFactory: (
        outbox: Outbox,
        payers: PayerRegistry,
        tokens: BackendServicesClient,
        policy: OutboundPolicy,
        audit: AuditLog,
        logger: JsonLogger,
        config: AppConfig,
      ) =>
        new DeliveryWorker(
          outbox,
          new PayerDelivery(payers, tokens, policy, config.delivery.timeoutMs),
          audit,
          logger,
          config.delivery.pollMs,
        ),
    },
    DisclosureUseCase,
  ],
})
export class DtrModule {}

/** The limits of a payer-logic pool (prefill, form rules) from configuration; a worker that stops is logged. */
function poolOptions(config: AppConfig, logger: JsonLogger, what: string, context: string) {
  return {
    size: config.prefillWorkers,
    deadlineMs: config.prefillLimits.deadlineMs,
    queueMax: config.prefillLimits.queueMax,
    memoryMb: config.prefillLimits.workerMemoryMb,
    stackMb: config.prefillLimits.workerStackMb,
    onWorkerExit: logExit(logger, what, context),
  };
}

/** Logs a worker process that stopped (it is replaced): its pid and why, never what it was evaluating. */
function logExit(logger: JsonLogger, what: string, context: string) {
  return ({ pid, exitCode, signal, reason }: WorkerExit) =>
    logger.entry(
      'warn',
      `${what} stopped; replaced`,
      { pid, exitCode, signal, ...(reason ? { reason } : {}) },
      context,
    );
}
