import { Controller, Post, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { html, type SafeHtml } from '@dtr/kernel';
import type { Response } from 'express';
import { sendErrorPage } from '../http/error-page.js';
import { JsonLogger } from '../logging/json-logger.js';
import { PrepareQuestionnairesUseCase } from './prepare-questionnaires.usecase.js';
import type { SessionRecord } from '@dtr/smart';
import { CurrentSession } from '../auth/current-session.decorator.js';

type QRItem = { linkId: string; text?: string; answer?: Array<Record<string, unknown>>; item?: QRItem[] };

function answerText(answer: Record<string, unknown>): string {
  for (const [key, value] of Object.entries(answer)) {
    if (!key.startsWith('value')) continue;
    if (value && typeof value === 'object') {
      const v = value as { display?: string; code?: string; value?: number; unit?: string; reference?: string };
      return (
        v.display ??
        v.code ??
        (v.value !== undefined ? `${v.value} ${v.unit ?? ''}`.trim() : (v.reference ?? JSON.stringify(value)))
      );
    }
    return String(value);
  }
  return '';
}

/** The prefilled questionnaires for the session, as a page (the form to complete them grows here). */
@ApiExcludeController()
@Controller('app/questionnaires')
export class QuestionnairesPageController {
  constructor(
    private readonly prepare: PrepareQuestionnairesUseCase,
    private readonly logger: JsonLogger,
  ) {}

  @Post()
  async page(@CurrentSession() session: SessionRecord, @Res() res: Response): Promise<void> {
    try {
      const result = await this.prepare.run(session);
      const rows = (items: QRItem[] = [], depth = 0): SafeHtml[] =>
        items.map(
          (item) =>
            html`<tr data-link-id="${item.linkId}"><td style="padding-left:${depth}rem">${item.text ?? item.linkId}</td><td class="answer">${(item.answer ?? []).map(answerText).join('; ')}</td></tr>${rows(item.item, depth + 1)}`,
        );
      const linkText = (status: string) =>
        status === 'in-progress'
          ? 'Resume your saved response'
          : status === 'not-started'
            ? 'Open the form to complete it'
            : `Open the form (${status})`;
      const sections = result.questionnaires.map(
        (q) => html`<section class="questionnaire"><h2>${q.questionnaire}</h2>
<p><a class="open-form" href="/app/questionnaires/${q.formId}">${linkText(q.formStatus)}</a></p>
<table><thead><tr><th>Question</th><th>Prefilled answer</th></tr></thead><tbody>${rows(q.questionnaireResponse['item'] as QRItem[])}</tbody></table>
${
  Object.keys(q.options).length
    ? html`<h3>Answer options from the patient's record</h3><dl class="options">${Object.entries(q.options).map(
        ([linkId, options]) =>
          html`<dt>${linkId}</dt><dd data-options-for="${linkId}">${options.map(answerText).join('; ')}</dd>`,
      )}</dl>`
    : ''
}
${q.issues.length ? html`<h3>Issues</h3><ul>${q.issues.map((i) => html`<li>${i.severity}: ${i.message}</li>`)}</ul>` : ''}</section>`,
      );
      res
        .status(200)
        .type('text/html')
        .set('Cache-Control', 'no-store')
        .send(
          html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Questionnaires</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}</style></head>
<body><h1>Questionnaires from ${result.payer.name}</h1>
<p id="data-read">Read from the EHR: ${result.dataRead.reads} resource(s) by id, ${result.dataRead.searches} patient search(es).</p>
${result.packageIssues.length ? html`<ul id="package-issues">${result.packageIssues.map((i) => html`<li>${i.severity}: ${i.message}</li>`)}</ul>` : ''}
${sections.length ? sections : html`<p>The payer has no questionnaire for this order.</p>`}
</body></html>`.value,
        );
    } catch (error) {
      sendErrorPage(res, error, this.logger, 'Could not prepare the questionnaires');
    }
  }
}
