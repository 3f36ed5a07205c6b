// The form page: loads one form of the session through the questionnire-responses API, renders it with the LHC-Forms
// web component, and saves and completes it through the same API. The server is the arbiter: after every save the
// form is rendered again from the server's answer (its validation, recomputed values and answer origins). Every value
// from the server is written with textContent, never as HTML.
(function () {
  'use strict';
  const formId = document.body.dataset.formId;
  const api = `/api/session/questionnaire-responses/${encodeURIComponent(formId)}`;
  const container = document.getElementById('form-container');
  const messages = document.getElementById('messages');
  const statusLine = document.getElementById('form-status');
  const saveButton = document.getElementById('save');
  const completeButton = document.getElementById('complete');
  const nextButton = document.getElementById('next');
  let view;
  // Issue codes meaning an item's expression could not give it a value (see libs/fhir/src/issues.ts).
  const PREFILL_FAILED = ['define-failed', 'expression-failed', 'expression-not-evaluated', 'unknown-define'];

  function el(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = String(text);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  function itemTexts(items, into) {
    for (const item of items || []) {
      into.set(item.linkId, item.text || item.linkId);
      itemTexts(item.item, into);
    }
    return into;
  }

  function say(text, ok, details) {
    messages.replaceChildren(el('p', text));
    messages.className = ok ? 'ok' : '';
    if (details && details.length) {
      const list = el('ul');
      for (const line of details) list.appendChild(line);
      messages.appendChild(list);
    }
  }

  function describeStatus(current) {
    const where =
      current.ehr && current.ehr.id
        ? `saved in the EHR as QuestionnaireResponse/${current.ehr.id}`
        : 'not yet saved in the EHR';
    const author =
      current.author && current.author.known
        ? `; answers you change are recorded as by ${current.author.display || 'you'}`
        : '; the EHR did not identify the user: the author is unknown, so changed answers carry no author';
    statusLine.textContent = `Status: ${current.status}, ${where}${author}.`;
    if (current.stoppedReason) statusLine.textContent += ` Stopped: ${current.stoppedReason}`;
  }

  function renderOrigins(current, texts) {
    const body = document.querySelector('#origins tbody');
    body.replaceChildren();
    for (const origin of current.origins || []) {
      const row = el('tr', undefined, { 'data-link-id': origin.linkId });
      row.appendChild(el('td', texts.get(origin.linkId) || origin.linkId));
      row.appendChild(el('td', origin.origin, { class: 'origin' }));
      const sources = el('td');
      if (origin.sources && origin.sources.length) {
        const details = el('details');
        details.appendChild(el('summary', `${origin.sources.length} EHR resource(s)`));
        const list = el('ul');
        for (const source of origin.sources) list.appendChild(el('li', source));
        details.appendChild(list);
        sources.appendChild(details);
      }
      row.appendChild(sources);
      body.appendChild(row);
    }
    const issues = document.getElementById('issues');
    issues.replaceChildren();
    for (const issue of current.issues || []) {
      const where = issue.linkId ? `${texts.get(issue.linkId) || issue.linkId}: ` : '';
      // An item whose expression failed was not prefilled: say so plainly, it is answered by hand.
      const notPrefilled = issue.linkId && PREFILL_FAILED.includes(issue.code);
      issues.appendChild(
        el(
          'li',
          notPrefilled
            ? `${where}prefill did not happen for this item; answer it by hand (${issue.message})`
            : `${where}${issue.message} (${issue.severity}; answer it by hand)`,
          issue.linkId ? { 'data-link-id': issue.linkId, ...(notPrefilled ? { class: 'prefill-failed' } : {}) } : {},
        ),
      );
    }
    document.getElementById('issues-section').hidden = !(current.issues && current.issues.length);
    const rules = document.getElementById('server-rules');
    rules.replaceChildren();
    for (const rule of current.serverRules || []) {
      const what = rule.name ? `variable %${rule.name}` : rule.kind;
      const where = rule.linkId ? `${texts.get(rule.linkId) || rule.linkId}: ` : 'The questionnaire: ';
      rules.appendChild(
        el('li', `${where}${what}, because ${rule.reason}`, rule.linkId ? { 'data-link-id': rule.linkId } : {}),
      );
    }
    document.getElementById('server-rules-section').hidden = !(current.serverRules && current.serverRules.length);
  }

  function renderConflict(current, texts) {
    const section = document.getElementById('conflict');
    section.hidden = !current.conflict;
    if (!current.conflict) return;
    document.getElementById('conflict-message').textContent = current.conflict.message;
    const rows = document.getElementById('conflict-rows');
    rows.replaceChildren();
    const answers = (qr) => {
      const map = new Map();
      const walk = (items) => {
        for (const item of items || []) {
          if (item.answer)
            map.set(
              item.linkId,
              JSON.stringify(
                item.answer.map((a) => Object.fromEntries(Object.entries(a).filter(([k]) => k.startsWith('value')))),
              ),
            );
          walk(item.item);
        }
      };
      walk(qr.item);
      return map;
    };
    const theirs = answers(current.conflict.theirs);
    const ours = answers(current.conflict.ours);
    for (const linkId of new Set([...theirs.keys(), ...ours.keys()])) {
      if (theirs.get(linkId) === ours.get(linkId)) continue;
      const row = el('tr', undefined, { 'data-link-id': linkId });
      row.appendChild(el('td', texts.get(linkId) || linkId));
      row.appendChild(el('td', theirs.get(linkId) || '(no answer)'));
      row.appendChild(el('td', ours.get(linkId) || '(no answer)'));
      rows.appendChild(row);
    }
  }

  /** The rendered item of a linkId (the renderer gives each row the id `item-<linkId>/<index…>`). */
  function renderedItem(linkId) {
    return Array.from(container.querySelectorAll('[id^="item-"]')).find((node) =>
      node.id.startsWith(`item-${linkId}/`),
    );
  }

  /** Beside each rendered item: its answer's origin, and the prefill issues that affect it (it stays answerable). */
  function annotateItems(current) {
    for (const origin of current.origins || []) {
      const item = renderedItem(origin.linkId);
      if (!item || item.querySelector(':scope > .origin-badge')) continue;
      const badge = el('span', origin.origin, { class: 'origin-badge', title: 'Where this answer came from' });
      item.prepend(badge);
    }
    for (const rule of current.serverRules || []) {
      const item = rule.linkId && renderedItem(rule.linkId);
      if (!item || item.querySelector(':scope > .server-rule')) continue;
      item.prepend(
        el('p', `The payer's ${rule.kind} for this item is run by the server when you save, not on this page.`, {
          class: 'server-rule',
          role: 'note',
        }),
      );
    }
    for (const issue of current.issues || []) {
      const item = issue.linkId && renderedItem(issue.linkId);
      if (!item) continue;
      item.prepend(
        el('p', `Could not be prefilled: ${issue.message}. Answer it by hand.`, {
          class: 'prefill-issue',
          role: 'note',
        }),
      );
    }
  }

  /**
   * Items bound to a value set by canonical get its codes as answerOptions, from the package's value sets the server
   * sent with the form (the renderer would otherwise ask a terminology server it does not have).
   */
  function withOptions(questionnaire, valueSets) {
    const byUrl = new Map((valueSets || []).map((vs) => [vs.url, vs]));
    const codesOf = (vs) =>
      vs.expansion && vs.expansion.contains
        ? vs.expansion.contains
        : ((vs.compose && vs.compose.include) || []).flatMap((inc) =>
            (inc.concept || []).map((c) => ({ system: inc.system, code: c.code, display: c.display })),
          );
    const walk = (items) =>
      (items || []).map((item) => {
        const copy = { ...item };
        const vs = copy.answerValueSet && !copy.answerOption && byUrl.get(copy.answerValueSet.split('|')[0]);
        if (vs) {
          copy.answerOption = codesOf(vs).map((c) => ({
            valueCoding: { system: c.system, code: c.code, ...(c.display ? { display: c.display } : {}) },
          }));
          delete copy.answerValueSet;
        }
        if (copy.item) copy.item = walk(copy.item);
        return copy;
      });
    return { ...questionnaire, item: walk(questionnaire.item) };
  }

  /** An adaptive form: the payer asks the questions and decides completion; its determinations are shown. */
  function renderAdaptive(current) {
    const adaptive = Boolean(current.adaptive);
    nextButton.hidden = !adaptive;
    completeButton.hidden = adaptive;
    const section = document.getElementById('coverage-information');
    const list = document.getElementById('determinations');
    list.replaceChildren();
    const determinations = (current.adaptive && current.adaptive.coverageInformation) || [];
    const labels = {
      coverage: 'Coverage',
      covered: 'Covered',
      'pa-needed': 'Prior authorization',
      'doc-needed': 'Documentation needed',
      'info-needed': 'Information needed',
      'coverage-assertion-id': 'Assertion id',
      'satisfied-pa-id': 'Prior authorization number',
      date: 'Date',
      reason: 'Reason',
    };
    for (const determination of determinations) {
      const dl = el('dl', undefined, { class: 'determination' });
      for (const [name, value] of Object.entries(determination)) {
        dl.appendChild(el('dt', labels[name] || name));
        dl.appendChild(el('dd', value, { 'data-name': name }));
      }
      list.appendChild(dl);
    }
    section.hidden = determinations.length === 0;
  }

  async function render(current) {
    view = current;
    renderAdaptive(current);
    const texts = itemTexts(current.questionnaire.item, new Map());
    document.getElementById('title').textContent =
      current.questionnaire.title || current.questionnaire.name || 'Questionnaire';
    document.title = document.getElementById('title').textContent;
    describeStatus(current);
    renderOrigins(current, texts);
    renderConflict(current, texts);
    const definition = LForms.Util.convertFHIRQuestionnaireToLForms(
      withOptions(current.questionnaire, current.valueSets),
      'R4',
    );
    const merged = LForms.Util.mergeFHIRDataIntoLForms('QuestionnaireResponse', current.response, definition, 'R4');
    container.replaceChildren();
    await LForms.Util.addFormToPage(merged, container);
    annotateItems(current, texts);
    const done = current.status === 'completed' || current.status === 'stopped';
    saveButton.disabled = done;
    completeButton.disabled = done;
    nextButton.disabled = done;
    document.getElementById('send-link').hidden = current.status !== 'completed';
    container.dataset.rendered = String(Date.now());
  }

  function currentResponse() {
    const qr = LForms.Util.getFormFHIRData('QuestionnaireResponse', 'R4', container);
    return { ...qr, status: 'in-progress' };
  }

  async function problemsOf(response) {
    return issuesOf(await response.json().catch(() => ({})));
  }

  function issuesOf(outcome) {
    const texts = itemTexts(view.questionnaire.item, new Map());
    return (outcome.issue || []).map((issue) => {
      const linkId = (issue.expression || [])[0];
      return el(
        'li',
        `${linkId ? `${texts.get(linkId) || linkId}: ` : ''}${issue.diagnostics || issue.code}`,
        linkId ? { 'data-link-id': linkId } : {},
      );
    });
  }

  async function send(method, url, body, doneText, options) {
    saveButton.disabled = true;
    completeButton.disabled = true;
    nextButton.disabled = true;
    try {
      const response = await fetch(url, {
        method,
        credentials: 'same-origin',
        headers: { 'content-type': 'application/fhir+json', accept: 'application/json' },
        body: JSON.stringify(body),
      });
      if (response.ok) {
        const before = view;
        await render(await response.json());
        say(typeof doneText === 'function' ? doneText(before, view) : doneText, true);
      } else if (options && options.adaptive && response.status >= 500) {
        // The payer (or the EHR after it) failed: the answers were kept by the server first; show its state.
        const details = await problemsOf(response);
        const text = details.map((d) => d.textContent).join(' ');
        const again = await fetch(api, { credentials: 'same-origin', headers: { accept: 'application/json' } });
        if (again.ok) await render(await again.json());
        say(`Not sent on (${response.status}): ${text}`);
      } else if (response.status === 409) {
        const answer = await response.json().catch(() => ({}));
        // A refusal (a check of this form still running, a completed form) rather than the EHR's newer version.
        if (answer.resourceType === 'OperationOutcome') return say('Not saved:', false, issuesOf(answer));
        await render(answer);
        say(
          'Not saved in the EHR: someone else changed this response there. Both versions are shown below; your draft is kept here.',
        );
      } else if (response.status === 422) {
        say('Not saved: some answers need attention.', false, await problemsOf(response));
      } else if (response.status === 401) {
        say('Your session has ended: launch the app again from the EHR. Nothing was lost that was saved before.');
      } else if (response.status === 503 || response.status === 504) {
        // Busy, or the payer's rules (or the EHR) ran past their deadline: the server's issue says which.
        const wait = Number(response.headers.get('retry-after'));
        say(
          `Not saved (${response.status}): your answers are still on this page; save again${
            wait > 0 ? ` in ${wait} seconds` : ' later'
          }.`,
          false,
          await problemsOf(response),
        );
      } else {
        say(
          `The EHR could not store the response (${response.status}); your draft is kept here and can be saved again later.`,
          false,
          await problemsOf(response),
        );
      }
    } catch (error) {
      say(
        `The server could not be reached (${error && error.message ? error.message : 'network error'}); nothing was lost here, try again.`,
      );
    } finally {
      const done = view && (view.status === 'completed' || view.status === 'stopped');
      saveButton.disabled = Boolean(done);
      completeButton.disabled = Boolean(done);
      nextButton.disabled = Boolean(done);
    }
  }

  function questionCount(current) {
    return itemTexts(current && current.questionnaire.item, new Map()).size;
  }

  function nextStep(body) {
    return send(
      'POST',
      `${api}/$next-question`,
      body,
      (before, after) =>
        after.status === 'completed'
          ? 'The payer says the questionnaire is complete: completed and saved in the EHR.'
          : `The payer asked ${questionCount(after) - questionCount(before)} more question(s); answers prefilled from the EHR are marked.`,
      { adaptive: true },
    );
  }

  saveButton.addEventListener('click', () => send('PUT', api, currentResponse(), 'Draft saved.'));
  nextButton.addEventListener('click', () => nextStep(currentResponse()));
  completeButton.addEventListener('click', () =>
    send('POST', `${api}/$complete`, currentResponse(), 'Completed and saved in the EHR.'),
  );

  fetch(api, { credentials: 'same-origin', headers: { accept: 'application/json' } })
    .then(async (response) => {
      if (!response.ok)
        throw new Error(
          response.status === 404 ? 'this form is not part of your session' : `the server answered ${response.status}`,
        );
      await render(await response.json());
      // An adaptive form with no question yet asks the payer for its first ones.
      if (view.adaptive && view.status !== 'completed' && view.status !== 'stopped' && questionCount(view) === 0)
        await nextStep({});
      if (view.resumed)
        say(
          `Resumed your saved response; answers from the EHR that changed since: ${view.resumed.updated.length}, new: ${view.resumed.added.length}.`,
          true,
        );
    })
    .catch((error) => {
      const reason = error && error.message ? error.message : Array.isArray(error) ? error.join('; ') : String(error);
      statusLine.textContent = `The form could not be loaded: ${reason}.`;
    });
})();
