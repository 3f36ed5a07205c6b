import { Body, Controller, Get, Param, Post, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { DtrError, html, type SafeHtml } from '@dtr/kernel';
import { LaunchService, type SessionRecord } from '@dtr/smart';
import type { Response } from 'express';
import { CurrentSession } from '../../auth/current-session.decorator.js';
import { allowFormTarget } from '../../http/content-security-policy.js';
import { type DisclosureReview, DisclosureUseCase } from './disclosure.usecase.js';
import type { SubmissionView } from './submission-view.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const STYLE = html`<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}.sensitive{background:#fff3cd}
.error{color:#a00}code{background:#f3f3f3;padding:0 .2rem}</style>`;

function page(title: string, body: SafeHtml, refresh = false): string {
  return html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title>
${refresh ? html`<meta http-equiv="refresh" content="2">` : ''}${STYLE}</head><body>
<p><a href="/app">Back to the session</a> · <a href="/app/submissions">Sent to the payer</a></p>${body}</body></html>`
    .value;
}

function choiceCell(key: string, reasons: string[]): SafeHtml {
  if (reasons.length === 0) return html`<td>sent</td>`;
  return html`<td><fieldset data-choice="${key}"><legend>${reasons.join('; ')}</legend>
<label><input type="radio" name="${key}" value="include" required> Include</label>
<label><input type="radio" name="${key}" value="withhold"> Withhold</label></fieldset></td>`;
}

function reviewBody(review: DisclosureReview, id: string, error?: string): SafeHtml {
  const answers = review.answers.map(
    (a) =>
      html`<tr class="${a.reasons.length ? 'sensitive' : ''}" data-link-id="${a.linkId}"><td>${a.text}</td><td>${a.value}</td>${choiceCell(a.key, a.reasons)}</tr>`,
  );
  const resources = review.resources.map(
    (r) =>
      html`<tr class="${r.reasons.length ? 'sensitive' : ''}"><td><code>${r.reference}</code></td>${choiceCell(r.key, r.reasons)}</tr>`,
  );
  const authorize = review.authorization.authorized
    ? html`<p>Disclosure authorized (${review.authorization.mode}${review.authorization.singleClient ? ', single client' : ''}).</p>`
    : html`<div id="authorize"><p class="error">Sending needs the disclosure authorization first.</p><form method="post" action="/disclose/authorize"><button type="submit" id="authorize-disclosure">Authorize sending to the payer</button></form></div>`;
  return html`<h1>Review before sending to ${review.payer.name}</h1>
${error ? html`<p class="error" role="alert" id="send-error">${error}</p>` : ''}
<p>${review.questionnaire.title ?? review.questionnaire.url}: this is exactly what will leave. A copy is stored in the EHR first.
${review.consents === 'unavailable' ? html`<strong>The EHR could not be asked about Consents: every answer drawn from the record needs a choice.</strong>` : ''}</p>
${authorize}
<form method="post" action="/app/questionnaire-responses/${id}/send">
<h2>Answers</h2><table id="answers"><thead><tr><th scope="col">Question</th><th scope="col">Answer</th><th scope="col">Sent?</th></tr></thead><tbody>${answers}</tbody></table>
<h2>Resources sent with the answers</h2>${resources.length ? html`<table id="resources"><thead><tr><th scope="col">Resource</th><th scope="col">Sent?</th></tr></thead><tbody>${resources}</tbody></table>` : html`<p>None.</p>`}
<p><button type="submit" id="send">Send to payer</button></p></form>`;
}

function statusBody(s: SubmissionView): SafeHtml {
  const final = s.state === 'delivered' || s.state === 'dead';
  const state: Record<SubmissionView['state'], string> = {
    'writing-back': 'Storing the copy in the EHR…',
    'write-back-failed': 'Not sent: the EHR did not take the copy. Nothing was sent to the payer.',
    queued: 'Stored in the EHR; being delivered to the payer…',
    delivered: 'Delivered to the payer.',
    dead: 'Not delivered: the payer could not be reached or refused it. An operator can retry it.',
  };
  const answer =
    s.payerAnswer === undefined
      ? ''
      : html`<details><summary>The payer's answer</summary><pre>${JSON.stringify(s.payerAnswer, null, 2)}</pre></details>`;
  return html`<h1>Submission to ${s.payer.id}</h1>
<p id="submission-state" data-state="${s.state}" role="status">${state[s.state]}${final ? '' : ' (this page refreshes)'}</p>
<dl><dt>Questionnaire</dt><dd>${s.questionnaire}</dd><dt>Route</dt><dd>${s.route}</dd>
<dt>Copy in the EHR</dt><dd id="ehr-copy">${s.ehrCopy ? html`<code>${s.ehrCopy.documentReference}</code> (SHA-256 <code>${s.ehrCopy.sha256}</code>)` : 'not yet'}</dd>
<dt>Attempts</dt><dd>${s.attempts}</dd>
<dt>Payer's answer</dt><dd id="payer-outcome">${s.payerOutcome ?? 'none yet'}</dd>
${s.error ? html`<dt>Last problem</dt><dd class="error">${s.error}</dd>` : ''}</dl>${answer}
${s.state === 'write-back-failed' ? html`<form method="post" action="/app/questionnaire-responses/${s.formId}/send"><button type="submit" id="retry">Try again</button></form>` : ''}`;
}

/**
 * The clinician's pages for sending: the review (exactly what leaves, sensitive entries with an explicit
 * include/withhold choice, a plain form POST), and the status of each submission (refreshing until final).
 */
@ApiExcludeController()
@Controller('app')
export class SendPageController {
  constructor(
    private readonly disclosure: DisclosureUseCase,
    private readonly launches: LaunchService,
  ) {}

  /** The review's authorize button redirects to the EHR's authorization endpoint: form-action must allow it. */
  private async allowAuthorizeButton(res: Response, session: SessionRecord, review: DisclosureReview): Promise<void> {
    if (!review.authorization.authorized)
      allowFormTarget(res, await this.launches.authorizationOrigin(session.tenantId));
  }

  @Get('questionnaire-responses/:id/send')
  async review(@CurrentSession() session: SessionRecord, @Param('id') id: string, @Res() res: Response): Promise<void> {
    if (!UUID.test(id)) throw new DtrError('NOT_FOUND', 'no such form');
    const review = await this.disclosure.review(session, id);
    if (review.submission) return res.redirect(303, `/app/submissions/${review.submission.id}`);
    await this.allowAuthorizeButton(res, session, review);
    res
      .status(200)
      .type('text/html')
      .set('Cache-Control', 'no-store')
      .send(page('Review and send', reviewBody(review, id)));
  }

  @Post('questionnaire-responses/:id/send')
  async send(
    @CurrentSession() session: SessionRecord,
    @Param('id') id: string,
    @Body() body: unknown,
    @Res() res: Response,
  ): Promise<void> {
    if (!UUID.test(id)) throw new DtrError('NOT_FOUND', 'no such form');
    const fields = body && typeof body === 'object' ? (body as Record<string, unknown>) : {};
    const choices = Object.fromEntries(
      Object.entries(fields).filter(([k]) => k.startsWith('item:') || k.startsWith('resource:')),
    );
    try {
      const outcome = await this.disclosure.send(session, id, { choices });
      res.redirect(303, `/app/submissions/${outcome.submission.id}`);
    } catch (error) {
      if (!(error instanceof DtrError) || (error.httpStatus !== 400 && error.httpStatus !== 403)) throw error;
      const review = await this.disclosure.review(session, id);
      await this.allowAuthorizeButton(res, session, review);
      res
        .status(error.httpStatus)
        .type('text/html')
        .set('Cache-Control', 'no-store')
        .send(page('Review and send', reviewBody(review, id, error.message)));
    }
  }

  @Get('submissions')
  async list(@CurrentSession() session: SessionRecord, @Res() res: Response): Promise<void> {
    const { submissions } = await this.disclosure.list(session);
    const rows = submissions.map(
      (s) =>
        html`<li><a href="/app/submissions/${s.id}">${s.questionnaire}</a>: <span data-state="${s.state}">${s.state}</span>${s.payerOutcome ? html` (${s.payerOutcome})` : ''}</li>`,
    );
    res
      .status(200)
      .type('text/html')
      .set('Cache-Control', 'no-store')
      .send(
        page(
          'Sent to the payer',
          html`<h1>Sent to the payer</h1>${rows.length ? html`<ul id="submissions">${rows}</ul>` : html`<p>Nothing sent yet.</p>`}`,
        ),
      );
  }

  @Get('submissions/:id')
  async status(@CurrentSession() session: SessionRecord, @Param('id') id: string, @Res() res: Response): Promise<void> {
    if (!UUID.test(id)) throw new DtrError('NOT_FOUND', 'no such submission');
    const s = await this.disclosure.get(session, id);
    const final = s.state === 'delivered' || s.state === 'dead' || s.state === 'write-back-failed';
    res
      .status(200)
      .type('text/html')
      .set('Cache-Control', 'no-store')
      .send(page('Submission', statusBody(s), !final));
  }
}
