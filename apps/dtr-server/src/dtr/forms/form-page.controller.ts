import { Controller, Get, Param, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { html } from '@dtr/kernel';
import type { Response } from 'express';

/** The renderer's files, as the build copies them from the lforms package (pinned: bump with the package). */
const LFORMS = '/static/lforms/40.1.3';
const FORM_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The form a clinician completes: a shell page; `/static/app/form.js` loads the form through the session's
 * questionnaire-responses API, renders it with the LHC-Forms web component, and saves and completes through the same
 * API, where the server validates, recomputes and sets every answer's origin. No inline script (CSP `script-src
 * 'self'`); the form id is the only value written into the page (escaped, and only when it is a uuid).
 */
@ApiExcludeController()
@Controller('app/questionnaires')
export class FormPageController {
  @Get(':id')
  page(@Param('id') id: string, @Res() res: Response): void {
    if (!FORM_ID.test(id)) {
      res
        .status(404)
        .type('text/html')
        .send(html`<!doctype html><title>Not found</title><p>No such form.</p>`.value);
      return;
    }
    res
      .status(200)
      .type('text/html')
      .set('Cache-Control', 'no-store')
      .send(
        html`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Questionnaire</title>
<link rel="stylesheet" href="${LFORMS}/webcomponent/styles.css"><link rel="stylesheet" href="/static/app/form.css"></head>
<body data-form-id="${id}">
<header><p><a href="/app">Back to the session</a></p><h1 id="title">Questionnaire</h1>
<p id="form-status" role="status" aria-live="polite">Loading…</p></header>
<main>
<div id="messages" role="alert" aria-live="assertive"></div>
<section id="conflict" hidden><h2>Someone else changed this response in the EHR</h2><p id="conflict-message"></p>
<table><thead><tr><th scope="col">Question</th><th scope="col">In the EHR now</th><th scope="col">Yours</th></tr></thead><tbody id="conflict-rows"></tbody></table></section>
<div id="form-container"></div>
<p class="actions"><button type="button" id="save">Save draft</button> <button type="button" id="complete">Complete</button> <button type="button" id="next" hidden>Send answers, get the next questions</button></p>
<section id="coverage-information" hidden><h2>The payer's determination</h2><div id="determinations"></div></section>
<p id="send-link" hidden><a href="/app/questionnaire-responses/${id}/send">Review and send to the payer</a></p>
<section id="origins-section"><h2>Where the answers came from</h2>
<table id="origins"><thead><tr><th scope="col">Question</th><th scope="col">Origin</th><th scope="col">From the EHR</th></tr></thead><tbody></tbody></table></section>
<section id="issues-section" hidden><h2>Prefill issues</h2><ul id="issues"></ul></section>
<section id="server-rules-section" hidden><h2>Rules checked when you save</h2><p>These rules of the payer are not run on this page (they could stall it); the server runs them each time you save, and their results show then.</p><ul id="server-rules"></ul></section>
</main>
<script src="${LFORMS}/webcomponent/assets/lib/zone.min.js"></script>
<script src="${LFORMS}/webcomponent/runtime.js"></script>
<script src="${LFORMS}/webcomponent/polyfills.js"></script>
<script src="${LFORMS}/webcomponent/main.js"></script>
<script src="${LFORMS}/fhir/R4/lformsFHIR.min.js"></script>
<script src="/static/app/form.js"></script>
</body></html>`.value,
      );
  }
}
