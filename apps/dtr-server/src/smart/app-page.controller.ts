import { Controller, Get, Query, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { html } from '@dtr/kernel';
import type { Response } from 'express';
import { SessionViewService } from './session.controller.js';
import type { SessionRecord } from '@dtr/smart';
import { CurrentSession } from '../auth/current-session.decorator.js';

/** Said wherever the launch did not name the clinician (no id_token, so no `fhirUser`). */
const AUTHOR_UNKNOWN = 'The EHR did not identify the user: the author is unknown';

/**
 * The clinician's page after launch. For now it shows the session context and the disclosure authorization;
 * the form (prefill, completion, send) grows here.
 */
@ApiExcludeController()
@Controller('app')
export class AppPageController {
  constructor(private readonly views: SessionViewService) {}

  @Get()
  async page(
    @CurrentSession() session: SessionRecord,
    @Query('disclose') disclose: unknown,
    @Res() res: Response,
  ): Promise<void> {
    const view = await this.views.view(session);
    const list = (items: string[]) =>
      items.length ? html`<ul>${items.map((i) => html`<li><code>${i}</code></li>`)}</ul>` : html`<p>none</p>`;
    const discloseLine = view.disclosure.authorized
      ? html`<p id="disclosure">Disclosure to the payer: authorized (${view.disclosure.mode}${view.disclosure.singleClient ? ', single client' : ''}).</p>`
      : html`<p id="disclosure">Disclosure to the payer needs a second authorization. <a href="/disclose/authorize">Authorize sending to the payer</a></p>`;
    res
      .status(200)
      .type('text/html')
      .set('Cache-Control', 'no-store')
      .send(
        html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>DTR</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:50rem}code{background:#f3f3f3;padding:0 .2rem}</style></head>
<body>
${view.needPatientBanner ? html`<div id="patient-banner"><strong>${view.patient.display ?? view.patient.id}</strong></div>` : ''}
<h1>Documentation for ${view.tenant.name}</h1>
${
  view.user.fhirUser
    ? html`<p id="signed-in">Signed in as <strong>${view.user.display ?? view.user.fhirUser}</strong>
 for patient <strong id="patient">${view.patient.display ?? view.patient.id}</strong>.</p>`
    : html`<p id="signed-in">For patient <strong id="patient">${view.patient.display ?? view.patient.id}</strong>.</p>
<p id="author-unknown" role="status">${AUTHOR_UNKNOWN}. Answers you give or change are recorded without an author.</p>`
}
${disclose === 'authorized' ? html`<p role="status">Disclosure authorized.</p>` : ''}
<h2>Orders</h2>${list(view.orders)}
<h2>Coverage</h2>${list(view.coverages)}
<form method="post" action="/app/questionnaires"><button type="submit" id="prepare">Get the payer's questionnaires, prefilled</button></form>
${discloseLine}
<p><a href="/app/submissions" id="submissions-link">Sent to the payer</a>: what this session sent, with the payer's answers.</p>
<form method="post" action="/api/session/logout"><button type="submit">Sign out</button></form>
</body></html>`.value,
      );
  }
}
