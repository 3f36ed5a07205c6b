import { Body, Controller, Post, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { html, type SafeHtml } from '@dtr/kernel';
import type { Response } from 'express';
import { sendErrorPage } from '../http/error-page.js';
import { JsonLogger } from '../logging/json-logger.js';
import { type PreparedQuestionnaires, PrepareQuestionnairesUseCase } from './prepare-questionnaires.usecase.js';
import { OrderCandidatesService } from './order-candidates.service.js';
import { dtrContextOf, type SessionRecord } from '@dtr/smart';
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

type PayerSection = PreparedQuestionnaires['payers'][number];

const linkText = (status: string) =>
  status === 'in-progress'
    ? 'Resume your saved response'
    : status === 'not-started'
      ? 'Open the form to complete it'
      : `Open the form (${status})`;

const rows = (items: QRItem[] = [], depth = 0): SafeHtml[] =>
  items.map(
    (item) =>
      html`<tr data-link-id="${item.linkId}"><td style="padding-left:${depth}rem">${item.text ?? item.linkId}</td><td class="answer">${(item.answer ?? []).map(answerText).join('; ')}</td></tr>${rows(item.item, depth + 1)}`,
  );

function questionnaireSection(q: PayerSection['questionnaires'][number]): SafeHtml {
  return html`<section class="questionnaire"><h3>${q.questionnaire}</h3>
<p><a class="open-form" href="/app/questionnaires/${q.formId}">${linkText(q.formStatus)}</a></p>
<table><thead><tr><th>Question</th><th>Prefilled answer</th></tr></thead><tbody>${rows(q.questionnaireResponse['item'] as QRItem[])}</tbody></table>
${
  Object.keys(q.options).length
    ? html`<h4>Answer options from the patient's record</h4><dl class="options">${Object.entries(q.options).map(
        ([linkId, options]) =>
          html`<dt>${linkId}</dt><dd data-options-for="${linkId}">${options.map(answerText).join('; ')}</dd>`,
      )}</dl>`
    : ''
}
${q.issues.length ? html`<h4>Issues</h4><ul>${q.issues.map((i) => html`<li>${i.severity}: ${i.message}</li>`)}</ul>` : ''}</section>`;
}

/** One payer's part of the page: the coverages it was asked with, its package issues and its questionnaires. */
function payerSection(p: PayerSection): SafeHtml {
  return html`<section class="payer" data-payer-id="${p.payer.id}"><h2>Questionnaires from ${p.payer.name}</h2>
<p class="payer-coverages">For coverage ${p.coverages.join(', ')}${p.coverageAssertion ? html` (coverage assertion <code>${p.coverageAssertion}</code>)` : ''}.</p>
${p.error ? html`<p class="payer-error" role="alert">Could not get this payer's questionnaires: ${p.error}</p>` : ''}
${p.packageIssues.length ? html`<ul class="package-issues">${p.packageIssues.map((i) => html`<li>${i.severity}: ${i.message}</li>`)}</ul>` : ''}
${p.questionnaires.length ? p.questionnaires.map(questionnaireSection) : p.error ? '' : html`<p>The payer has no questionnaire for this order.</p>`}
</section>`;
}

/**
 * The prefilled questionnaires for the session, grouped per payer. The order picker of `/app` posts here with the
 * chosen `order`: it is checked against the EHR and recorded on the session first.
 */
@ApiExcludeController()
@Controller('app/questionnaires')
export class QuestionnairesPageController {
  constructor(
    private readonly prepare: PrepareQuestionnairesUseCase,
    private readonly orders: OrderCandidatesService,
    private readonly logger: JsonLogger,
  ) {}

  @Post()
  async page(@CurrentSession() session: SessionRecord, @Body() body: unknown, @Res() res: Response): Promise<void> {
    try {
      const order = body && typeof body === 'object' ? (body as Record<string, unknown>)['order'] : undefined;
      const context = dtrContextOf(session.context);
      if (order === undefined && context.orders.length === 0 && context.tasks.length === 0) {
        // Nothing chosen yet: back to the picker.
        res.redirect(303, '/app#order-picker');
        return;
      }
      const current = order === undefined ? session : (await this.orders.choose(session, order)).session;
      const result = await this.prepare.run(current);
      res
        .status(200)
        .type('text/html')
        .set('Cache-Control', 'no-store')
        .send(
          html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Questionnaires</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}section.payer{border-top:2px solid #888;margin-top:1.5rem}</style></head>
<body><h1>Questionnaires for ${result.orders.join(', ')}</h1>
<p id="data-read">Read from the EHR: ${result.dataRead.reads} resource(s) by id, ${result.dataRead.searches} patient search(es).</p>
${result.payers.map(payerSection)}
${result.unmatchedCoverages.length ? html`<p id="unmatched-coverages">Not sent to any payer (payer not registered here): ${result.unmatchedCoverages.join(', ')}.</p>` : ''}
<p><a href="/app">Back</a></p>
</body></html>`.value,
        );
    } catch (error) {
      sendErrorPage(res, error, this.logger, 'Could not prepare the questionnaires');
    }
  }
}
