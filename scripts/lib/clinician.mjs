// A clinician's whole DTR path over real HTTP, for the chaos and load scripts: launch, prepare, complete, authorize
// disclosure, review, choose, Send; retried while a server is away. And what the sandbox peers saw of the result.
import { launch } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const DELIVERY = { system: 'http://example.org/dtr/CodeSystem/oxygen-delivery', code: 'concentrator' };

/** Retries `fn` while the server is away (connection refused, 5xx) up to a deadline; 4xx answers are returned. */
async function persist(fn, what, deadlineMs = 180_000) {
  const deadline = Date.now() + deadlineMs;
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await fn();
      if (result === undefined || result.status === undefined || result.status < 500) return result;
      if (Date.now() > deadline) throw new Error(`${what}: still ${result.status}`);
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${what}: ${error.message}`);
    }
    await sleep(Math.min(2000, 100 * 2 ** Math.min(attempt, 5)));
  }
}

/** A JSON request with the browser's cookies; `{status, body}`. */
export async function json(url, jar, method = 'GET', body) {
  const target = new URL(url);
  const response = await fetch(url, {
    method,
    headers: {
      cookie: jar.header(target.host),
      // What a browser sends with a same-origin fetch from our own pages.
      ...(method !== 'GET' ? { origin: target.origin, 'sec-fetch-site': 'same-origin' } : {}),
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await response.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  return { status: response.status, body: parsed };
}

/**
 * One clinician from launch to Send, for patient `patient` (an oxygen-order record, harness `oxygenOrderRecord`).
 * `sends` Sends are clicked at once (two tabs, or two instances behind a balancer): they must give one submission.
 * Returns the submission ids the Sends answered and when Send was first clicked.
 */
export async function clinicianToSend(serverUrl, ehrFhir, { patient, user, n, sends = 1, between }) {
  const jar = await persist(
    () => launch(serverUrl, ehrFhir, { patient, user, order: `DeviceRequest/${patient}-order` }),
    'launch',
  );
  const prepared = await persist(() => json(`${serverUrl}/api/session/questionnaires`, jar, 'POST'), 'prepare');
  if (prepared.status !== 200) throw new Error(`prepare answered ${prepared.status}`);
  if (between) await between(jar);
  const form = `${serverUrl}/api/session/questionnaire-responses/${prepared.body.payers[0].questionnaires[0].formId}`;
  const view = await persist(() => json(form, jar), 'open');
  const qr = structuredClone(view.body.response);
  qr.item = [
    ...(qr.item ?? []).filter((i) => i.linkId !== 'delivery-system'),
    { linkId: 'delivery-system', answer: [{ valueCoding: DELIVERY }] },
  ];
  const done = await persist(() => json(`${form}/$complete`, jar, 'POST', qr), 'complete');
  if (done.status !== 200 && done.status !== 409) throw new Error(`complete answered ${done.status}`);
  await persist(() => authorizeDisclosure(serverUrl, jar), 'authorize');
  const review = await persist(() => json(`${form}/disclosure`, jar), 'review');
  if (review.status !== 200) throw new Error(`review answered ${review.status}: ${JSON.stringify(review.body)}`);
  const choices = Object.fromEntries(review.body.needsChoice.map((k, i) => [k, (n + i) % 2 ? 'include' : 'withhold']));
  const sentAt = Date.now();
  // Send, and Send again while it did not take (the server away, or the EHR refused the copy: nothing was sent).
  const sendOnce = () =>
    persist(async () => {
      const r = await json(`${form}/$send`, jar, 'POST', { choices });
      return r.status === 403 ? { status: 503 } : r;
    }, 'send');
  const answers = await Promise.all(Array.from({ length: sends }, sendOnce));
  for (const sent of answers)
    if (sent.status !== 200 && sent.status !== 202)
      throw new Error(`send answered ${sent.status}: ${JSON.stringify(sent.body)}`);
  return { ids: answers.map((a) => a.body.id), sentAt, jar };
}

/** The second authorization (user-delegated disclose): followed hop by hop as a browser does. */
async function authorizeDisclosure(serverUrl, jar) {
  const end = await jar.navigate(`${serverUrl}/disclose/authorize`, 20, 'POST');
  if (end.status >= 400) throw new Error(`disclosure authorization ended at ${end.url} (${end.status})`);
  return end;
}

/**
 * What the sandbox peers hold for the submissions `ids`: per key, how often the payer accepted it (not as a repeat),
 * when it first arrived, and how many copies the EHR holds.
 */
export async function peerRecords(ehrOrigin, payerOrigin) {
  const received = await (await fetch(`${payerOrigin}/_sandbox/submissions`)).json();
  const accepted = new Map();
  const firstAt = new Map();
  for (const r of received) {
    if (!r.idempotencyKey) continue;
    if (!r.duplicate) accepted.set(r.idempotencyKey, (accepted.get(r.idempotencyKey) ?? 0) + 1);
    if (!firstAt.has(r.idempotencyKey)) firstAt.set(r.idempotencyKey, Date.parse(r.at));
  }
  const docs = await (await fetch(`${ehrOrigin}/_sandbox/store/DocumentReference`)).json();
  const copies = new Map();
  for (const e of docs.entry ?? [])
    for (const i of e.resource.identifier ?? [])
      if (i.system === 'urn:dtr-backend:submission') copies.set(i.value, (copies.get(i.value) ?? 0) + 1);
  return { received, accepted, firstAt, copies };
}
