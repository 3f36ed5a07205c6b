import express, { type Request, type Response } from 'express';
import type { EhrAuthServer } from '../ehr/auth/index.js';
import type { EhrFhirServer } from '../ehr/fhir/index.js';
import type { PayerServer } from '../payer/index.js';
import type { PeerServer } from '../shared/peer-server.js';
import { html, type SafeHtml } from '@dtr/kernel';

export interface DemoOptions {
  peer: PeerServer;
  fhir: EhrFhirServer;
  auth: EhrAuthServer;
  payer: PayerServer;
  appLaunchUrl: string;
}

const ORDER_TYPES = ['DeviceRequest', 'ServiceRequest', 'MedicationRequest'] as const;

interface OrderRow {
  reference: string;
  type: string;
  text: string;
  status: string;
}

type AnyResource = { resourceType: string; id?: string } & Record<string, unknown>;

function codeText(resource: AnyResource): string {
  const concept = (resource['codeCodeableConcept'] ?? resource['code'] ?? resource['medicationCodeableConcept']) as
    { text?: string; coding?: Array<{ display?: string; code?: string }> } | undefined;
  return concept?.text ?? concept?.coding?.[0]?.display ?? concept?.coding?.[0]?.code ?? resource.resourceType;
}

/**
 * The walkable demo, served by the sandbox EHR at `/`: pick a user, a patient and one of the patient's orders,
 * and start an EHR launch of the DTR app (as an EHR's "launch app" button does).
 */
export function mountDemo(options: DemoOptions): void {
  const { peer, fhir, auth, payer } = options;

  async function ordersOf(patientId: string): Promise<OrderRow[]> {
    const rows: OrderRow[] = [];
    for (const type of ORDER_TYPES) {
      for (const resource of fhir.store.search(type, { patient: patientId }) as AnyResource[]) {
        rows.push({
          reference: `${type}/${resource.id}`,
          type,
          text: codeText(resource),
          status: String(resource['status'] ?? ''),
        });
      }
    }
    return rows;
  }

  async function coverageOf(patientId: string): Promise<string | undefined> {
    const coverages = fhir.store.search('Coverage', { patient: patientId }) as AnyResource[];
    return coverages[0]?.id ? `Coverage/${coverages[0].id}` : undefined;
  }

  peer.app.get('/', async (_req: Request, res: Response) => {
    const users = fhir.listPractitioners();
    const patients = fhir.listPatients();
    const sections: SafeHtml[] = [];
    for (const patient of patients) sections.push(patientSection(patient, await ordersOf(patient.id), users));
    const page = demoPage(fhir.baseUrl, payer.submissions().length, sections);
    res
      .status(200)
      .set('Content-Security-Policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
      .type('text/html')
      .send(page.value);
  });

  peer.app.post(
    '/_sandbox/demo/launch',
    express.urlencoded({ extended: false, limit: '4kb' }),
    async (req: Request, res: Response) => {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const patient = typeof body['patient'] === 'string' ? body['patient'] : '';
      const order = typeof body['order'] === 'string' ? body['order'] : '';
      const user = typeof body['user'] === 'string' ? body['user'] : undefined;
      if (!fhir.listPatients().some((p) => p.id === patient)) {
        res.status(400).type('text/plain').send('Unknown patient');
        return;
      }
      const orders = await ordersOf(patient);
      if (!orders.some((o) => o.reference === order)) {
        res.status(400).type('text/plain').send('That order does not belong to that patient');
        return;
      }
      if (user !== undefined && !fhir.listPractitioners().some((u) => u.id === user)) {
        res.status(400).type('text/plain').send('Unknown user');
        return;
      }
      const coverage = await coverageOf(patient);
      const launch = auth.createLaunch({
        patient,
        ...(user ? { user } : {}),
        fhirContext: [{ reference: order }, ...(coverage ? [{ reference: coverage }] : [])],
        fhirContextStyle: '2.1-objects',
        needPatientBanner: false,
      });
      const target = new URL(options.appLaunchUrl);
      target.searchParams.set('iss', fhir.baseUrl);
      target.searchParams.set('launch', launch);
      res.redirect(303, target.toString());
    },
  );
}

/** One patient of the demo page: its orders, each with a clinician picker and a launch button. */
function patientSection(
  patient: { id: string; display: string },
  orders: OrderRow[],
  users: Array<{ id: string; display: string }>,
): SafeHtml {
  return html`
        <section class="patient" data-patient="${patient.id}">
          <h2>${patient.display} <small>Patient/${patient.id}</small></h2>
          ${orders.length === 0 ? html`<p>No orders.</p>` : html``}
          <ul>
            ${orders.map(
              (order) => html`
                <li>
                  <form method="post" action="/_sandbox/demo/launch">
                    <input type="hidden" name="patient" value="${patient.id}">
                    <input type="hidden" name="order" value="${order.reference}">
                    <span class="order">${order.text}</span> <small>${order.reference} (${order.status})</small>
                    <select name="user" aria-label="Clinician">
                      ${users.map((u) => html`<option value="${u.id}">${u.display}</option>`)}
                    </select>
                    <button type="submit">Launch DTR</button>
                  </form>
                </li>`,
            )}
          </ul>
        </section>`;
}

/** The demo page around the patients' sections. */
function demoPage(fhirBase: string, submissions: number, sections: SafeHtml[]): SafeHtml {
  return html`<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Sandbox EHR — DTR demo</title>
  <style>
    body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 60rem; }
    section.patient { border: 1px solid #ccc; border-radius: 6px; padding: 0 1rem; margin: 1rem 0; }
    small { color: #666; }
    li { margin: .4rem 0; }
  </style>
</head>
<body>
  <h1>Sandbox EHR</h1>
  <p>Pick an order and launch the DTR app for it (EHR launch). FHIR base: <code>${fhirBase}</code>.
     The sandbox payer has received <strong id="submissions">${submissions}</strong> submission(s).</p>
  ${sections}
</body>
</html>`;
}
