import { Controller, Post, Req, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { Response } from 'express';
import { sendErrorPage } from '../http/error-page.js';
import { JsonLogger } from '../logging/json-logger.js';
import type { SessionRequest } from '../smart/session.controller.js';
import { PrepareQuestionnairesUseCase } from './prepare-questionnaires.usecase.js';

const esc = (value: unknown) => String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

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
  async page(@Req() req: SessionRequest, @Res() res: Response): Promise<void> {
    try {
      const result = await this.prepare.run(req.user);
      const rows = (items: QRItem[] = [], depth = 0): string =>
        items
          .map(
            (item) =>
              `<tr data-link-id="${esc(item.linkId)}"><td style="padding-left:${depth}rem">${esc(item.text ?? item.linkId)}</td><td class="answer">${esc(
                (item.answer ?? []).map(answerText).join('; '),
              )}</td></tr>${rows(item.item, depth + 1)}`,
          )
          .join('');
      const sections = result.questionnaires
        .map(
          (q) => `<section class="questionnaire"><h2>${esc(q.questionnaire)}</h2>
<p><a class="open-form" href="/app/questionnaires/${esc(q.formId)}">${q.formStatus === 'in-progress' ? 'Resume your saved response' : q.formStatus === 'not-started' ? 'Open the form to complete it' : `Open the form (${esc(q.formStatus)})`}</a></p>
<table><thead><tr><th>Question</th><th>Prefilled answer</th></tr></thead><tbody>${rows(q.questionnaireResponse['item'] as QRItem[])}</tbody></table>
${
  Object.keys(q.options).length
    ? `<h3>Answer options from the patient's record</h3><dl class="options">${Object.entries(q.options)
        .map(
          ([linkId, options]) =>
            `<dt>${esc(linkId)}</dt><dd data-options-for="${esc(linkId)}">${esc(options.map(answerText).join('; '))}</dd>`,
        )
        .join('')}</dl>`
    : ''
}
${q.issues.length ? `<h3>Issues</h3><ul>${q.issues.map((i) => `<li>${esc(i.severity)}: ${esc(i.message)}</li>`).join('')}</ul>` : ''}</section>`,
        )
        .join('');
      res.status(200).type('text/html').set('Cache-Control', 'no-store')
        .send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Questionnaires</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}</style></head>
<body><h1>Questionnaires from ${esc(result.payer.name)}</h1>
<p id="data-read">Read from the EHR: ${result.dataRead.reads} resource(s) by id, ${result.dataRead.searches} patient search(es).</p>
${result.packageIssues.length ? `<ul id="package-issues">${result.packageIssues.map((i) => `<li>${esc(i.severity)}: ${esc(i.message)}</li>`).join('')}</ul>` : ''}
${sections || '<p>The payer has no questionnaire for this order.</p>'}
</body></html>`);
    } catch (error) {
      sendErrorPage(res, error, this.logger, 'Could not prepare the questionnaires');
    }
  }
}
