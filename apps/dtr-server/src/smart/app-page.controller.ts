import { Controller, Get, Query, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { html, type SafeHtml } from '@dtr/kernel';
import type { Response } from 'express';
import { SessionViewService } from './session.controller.js';
import { LaunchService, type SessionRecord } from '@dtr/smart';
import { type OrderCandidates, OrderCandidatesService } from '../dtr/order-candidates.service.js';
import { CurrentSession } from '../auth/current-session.decorator.js';
import { allowFormTarget } from '../http/content-security-policy.js';

/** The order picker: the patient's orders (and in-progress responses to resume), one to choose. */
function orderPicker(found: OrderCandidates): SafeHtml {
  const label = (c: OrderCandidates['candidates'][number]) =>
    c.resourceType === 'QuestionnaireResponse'
      ? html`Resume the in-progress response <code>${c.reference}</code> (${c.description ?? 'questionnaire'}) for <code>${c.order ?? ''}</code>`
      : html`${c.description ?? c.resourceType} <code>${c.reference}</code> (${c.status}${c.date ? `, ${c.date}` : ''})`;
  const chosen = found.chosen?.questionnaireResponse ?? found.chosen?.order;
  return html`<section id="order-picker"><h2>Which order needs documentation?</h2>
<p>The launch named no order. Choose one of the patient's orders in the EHR:</p>
${found.issues.map((i) => html`<p class="order-search-issue" role="alert">${i.resourceType} could not be searched: ${i.message}</p>`)}
${
  found.candidates.length
    ? html`<form method="post" action="/app/questionnaires" id="choose-order">${found.candidates.map(
        (c) =>
          html`<p><label><input type="radio" name="order" value="${c.reference}" required${c.reference === chosen ? html` checked` : ''}> ${label(c)}</label></p>`,
      )}<button type="submit" id="choose">Get the payer's questionnaires for this order, prefilled</button></form>`
    : html`<p id="no-orders">The EHR holds no active order, appointment or encounter for this patient. Create the order in the EHR, then launch again.</p>`
}</section>`;
}

/** Said wherever the launch did not name the clinician (no id_token, so no `fhirUser`). */
const AUTHOR_UNKNOWN = 'The EHR did not identify the user: the author is unknown';

/**
 * The clinician's page after launch: the session context, the disclosure authorization, and the way to the
 * prefilled questionnaires; when the launch named no order, the order picker.
 */
@ApiExcludeController()
@Controller('app')
export class AppPageController {
  constructor(
    private readonly views: SessionViewService,
    private readonly launches: LaunchService,
    private readonly orders: OrderCandidatesService,
  ) {}

  @Get()
  async page(
    @CurrentSession() session: SessionRecord,
    @Query('disclose') disclose: unknown,
    @Res() res: Response,
  ): Promise<void> {
    const view = await this.views.view(session);
    // The disclose button's answer redirects to the EHR's authorization endpoint: the page's form-action must allow it.
    if (!view.disclosure.authorized) allowFormTarget(res, await this.launches.authorizationOrigin(session.tenantId));
    const launchNamedOrder = !view.orderChosen && (view.orders.length > 0 || view.tasks.length > 0);
    const picker = launchNamedOrder ? undefined : orderPicker(await this.orders.candidates(session));
    const list = (items: string[]) =>
      items.length ? html`<ul>${items.map((i) => html`<li><code>${i}</code></li>`)}</ul>` : html`<p>none</p>`;
    const discloseLine = view.disclosure.authorized
      ? html`<p id="disclosure">Disclosure to the payer: authorized (${view.disclosure.mode}${view.disclosure.singleClient ? ', single client' : ''}).</p>`
      : html`<p id="disclosure">Disclosure to the payer needs a second authorization.</p><form method="post" action="/disclose/authorize"><button type="submit" id="authorize-disclosure">Authorize sending to the payer</button></form>`;
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
<h2>Orders</h2>${list(view.orders)}${view.tasks.length ? html`<h2>Tasks</h2>${list(view.tasks)}` : ''}
<h2>Coverage</h2>${list(view.coverages)}
${picker ?? html`<form method="post" action="/app/questionnaires"><button type="submit" id="prepare">Get the payer's questionnaires, prefilled</button></form>`}
${discloseLine}
<p><a href="/app/submissions" id="submissions-link">Sent to the payer</a>: what this session sent, with the payer's answers.</p>
<form method="post" action="/api/session/logout"><button type="submit">Sign out</button></form>
</body></html>`.value,
      );
  }
}
