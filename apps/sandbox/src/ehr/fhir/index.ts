import { randomUUID } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import { EHR_PATHS } from '../../shared/clients.js';
import type { PeerServer } from '../../shared/peer-server.js';
import { fingerprint } from '../../shared/request-log.js';
import type { AccessTokenInfo, IntrospectAccessToken } from '../../shared/tokens.js';
import { FhirStore, FhirStoreError, patientReferences, type Resource } from './fhir-store.js';

class TransactionRefused extends Error {
  constructor(readonly result: { status: number; error?: [number, string, string] }) {
    super('transaction entry refused');
  }
}

/**
 * The sandbox EHR's FHIR R4 server (dev/test only): read, vread, search, create, update, conditional create,
 * transaction/batch, `_history`; every request needs a bearer token from the sandbox authorization server, whose
 * audience must be this base; SMART v1/v2 scopes are enforced per type and interaction, patient-level scopes to
 * the token's patient compartment. Every request is recorded in the peer's log.
 * Storage and search are our own small in-memory implementation: @medplum/fhir-router 4's MemoryRepository ignored
 * `patient=` and mismatched token searches when tried, and a search that ignores a filter would hide exactly the
 * over-reading this sandbox exists to catch.
 * @see https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
 */
export interface EhrFhirOptions {
  peer: PeerServer;
  introspect: IntrospectAccessToken;
  resources: Resource[];
  /** Client ids allowed to write DocumentReference and Provenance (the disclosure identity). */
  discloseClients?: string[];
  /**
   * The scopes a client registered at run time (UDAP dynamic registration) asked for, undefined for others: one that
   * registered a write scope on DocumentReference or Provenance is a disclosure identity too.
   */
  registeredScopes?: (clientId: string) => string[] | undefined;
}

/** What only the disclosure identity may write. */
const DISCLOSURE_TYPES = new Set(['DocumentReference', 'Provenance']);

/** A SMART v1 or v2 scope that lets its holder create or update a disclosure type. */
const DISCLOSURE_WRITE =
  /^(?:patient|user|system)\/(?:DocumentReference|Provenance|\*)\.(?:write|\*|[rds]*[cu][cruds]*)$/;

/** Whether `clientId` is a disclosure identity: configured as one, or registered (UDAP) with a disclosure write scope. */
function isDiscloser(options: EhrFhirOptions, clientId: string | undefined): boolean {
  if (!clientId) return false;
  if ((options.discloseClients ?? []).includes(clientId)) return true;
  return (options.registeredScopes?.(clientId) ?? []).some((scope) => DISCLOSURE_WRITE.test(scope));
}

export interface EhrFhirServer {
  baseUrl: string;
  store: FhirStore;
  listPatients(): Array<{ id: string; display: string }>;
  listPractitioners(): Array<{ id: string; fhirUser: string; display: string }>;
}

type Interaction = 'c' | 'r' | 'u' | 'd' | 's';

interface Grant {
  level: 'patient' | 'user' | 'system';
  type: string;
  interactions: Set<Interaction>;
}

function parseScopes(scopes: string[]): Grant[] {
  const grants: Grant[] = [];
  for (const scope of scopes) {
    const m = /^(patient|user|system)\/([A-Za-z]+|\*)\.(read|write|\*|c?r?u?d?s?)(?:\?.*)?$/.exec(scope);
    if (!m) continue;
    const perms = m[3]!;
    const interactions = new Set<Interaction>(
      perms === '*'
        ? ['c', 'r', 'u', 'd', 's']
        : perms === 'read'
          ? ['r', 's']
          : perms === 'write'
            ? ['c', 'u', 'd']
            : ([...perms] as Interaction[]),
    );
    grants.push({ level: m[1] as Grant['level'], type: m[2]!, interactions });
  }
  return grants;
}

/** Which levels allow an interaction on a type: `unlimited` (user/system), `compartment` (patient only) or none. */
function access(scopes: string[], type: string, interaction: Interaction): 'unlimited' | 'compartment' | undefined {
  const matching = parseScopes(scopes).filter(
    (g) => (g.type === '*' || g.type === type) && g.interactions.has(interaction),
  );
  if (matching.some((g) => g.level !== 'patient')) return 'unlimited';
  return matching.length > 0 ? 'compartment' : undefined;
}

function inCompartment(resource: Resource, patient: string | undefined): boolean {
  if (!patient) return false;
  if (resource.resourceType === 'Patient') return resource.id === patient;
  return patientReferences(resource).some((ref) => ref === `Patient/${patient}` || ref.endsWith(`/Patient/${patient}`));
}

function outcome(res: Response, status: number, code: string, diagnostics: string): void {
  res
    .status(status)
    .type('application/fhir+json')
    .send(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] }));
}

/** The weak ETag of a version (`W/"<versionId>"`), as FHIR servers send it. */
function etagOf(resource: Resource): string {
  return `W/"${resource.meta?.versionId ?? '1'}"`;
}

/**
 * Version-aware update: `If-Match` must name the current version, else 412 (someone else changed the resource).
 * Accepts `W/"3"`, `"3"` and a bare `3`.
 * @see https://hl7.org/fhir/R4/http.html#concurrency
 */
function versionMismatch(current: Resource | undefined, ifMatch: string): string | undefined {
  const wanted = /^(?:W\/)?"?([^"]*)"?$/.exec(ifMatch.trim())?.[1];
  if (!current) return 'If-Match names a version of a resource that does not exist';
  const actual = current.meta?.versionId ?? '1';
  return wanted === actual ? undefined : `If-Match names version ${wanted ?? '?'}, the current version is ${actual}`;
}

/**
 * Test and operator view of what this EHR holds: `GET /_sandbox/store/{type}` lists the current version of every
 * resource of that type (`?history=true` lists every version, newest first); `PUT /_sandbox/store/{type}/{id}` stores
 * a new version as another EHR user would. Not FHIR-authorized: the sandbox is dev/test only, and `/_sandbox/` is its
 * control surface.
 */
function mountStoreListing(peer: PeerServer, store: FhirStore): void {
  peer.app.get('/_sandbox/store/:type', (req, res) => {
    const type = String(req.params['type']);
    if (!/^[A-Z][A-Za-z]{1,63}$/.test(type)) return outcome(res, 400, 'invalid', `${type} is not a resource type`);
    const current = store.all(type);
    const withHistory = req.query['history'] === 'true';
    res.type('application/fhir+json').send(
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'collection',
        total: current.length,
        entry: current.flatMap((resource) =>
          withHistory ? store.history(type, resource.id!).map((version) => ({ resource: version })) : [{ resource }],
        ),
      }),
    );
  });
  // Someone else at the EHR changes a resource (a new version), for tests of concurrent edits.
  peer.app.put(
    '/_sandbox/store/:type/:id',
    express.json({ type: ['application/json', 'application/fhir+json'] }),
    (req, res) => {
      const type = String(req.params['type']);
      const id = String(req.params['id']);
      const body = req.body as Resource | undefined;
      if (!body || body.resourceType !== type || body.id !== id)
        return outcome(res, 400, 'invalid', `the body must be the ${type} with id ${id}`);
      const stored = store.put(body);
      res.setHeader('ETag', etagOf(stored));
      res.type('application/fhir+json').send(JSON.stringify(stored));
    },
  );
}

/** Changes the last character of the stored attachment (the stored copy, not the one answered to the writer). */
function alterAttachment(resource: Resource): void {
  const attachment = (resource['content'] as Array<{ attachment?: { data?: string } }> | undefined)?.[0]?.attachment;
  if (!attachment?.data) return;
  const bytes = Buffer.from(attachment.data, 'base64').toString('utf8');
  attachment.data = Buffer.from(`${bytes.slice(0, -1)} `, 'utf8').toString('base64');
}

function nameOf(resource: Resource): string {
  const name = (resource['name'] as Array<{ text?: string; given?: string[]; family?: string }> | undefined)?.[0];
  return name?.text ?? [...(name?.given ?? []), name?.family].filter(Boolean).join(' ') ?? resource.id ?? '';
}

/** What every part of the sandbox EHR's FHIR server shares. */
interface Ehr {
  peer: PeerServer;
  baseUrl: string;
  store: FhirStore;
  options: EhrFhirOptions;
  behaviour: { alterAttachments: boolean };
}

type WriteResult = { status: number; resource?: Resource; error?: [number, string, string] };
type Write = (
  res: Response,
  method: 'POST' | 'PUT',
  type: string,
  id: string | undefined,
  body: Resource,
  ifNoneExist?: string,
  ifMatch?: string,
) => WriteResult;

export async function createEhrFhirServer(options: EhrFhirOptions): Promise<EhrFhirServer> {
  const { peer } = options;
  const baseUrl = `${peer.origin}${EHR_PATHS.fhir}`;
  const store = new FhirStore();
  for (const resource of options.resources) store.put(resource);
  const ehr: Ehr = { peer, baseUrl, store, options, behaviour: { alterAttachments: false } };

  const router = express.Router();
  router.get('/metadata', (_req, res) => {
    res.type('application/fhir+json').send(
      JSON.stringify({
        resourceType: 'CapabilityStatement',
        status: 'active',
        kind: 'instance',
        fhirVersion: '4.0.1',
        format: ['json'],
      }),
    );
  });
  router.use(express.json({ type: ['application/json', 'application/fhir+json'], limit: '5mb' }));
  router.use(authenticate(ehr));
  mountSearch(router, ehr);
  mountReads(router, ehr);
  const write = writer(ehr);
  mountWrites(router, ehr, write);
  mountTransaction(router, ehr, write);

  peer.app.use(EHR_PATHS.fhir, router);
  mountStoreListing(peer, store);
  // Misbehaviour for tests: `alterAttachments` stores DocumentReference attachments with one byte changed (what a
  // buggy or transcoding EHR would do), so a read-back check has something to catch.
  peer.app.put('/_sandbox/ehr-behaviour', express.json(), (req, res) => {
    ehr.behaviour.alterAttachments =
      (req.body as { alterAttachments?: unknown } | undefined)?.alterAttachments === true;
    res.json(ehr.behaviour);
  });
  return {
    baseUrl,
    store,
    listPatients: () => store.all('Patient').map((p) => ({ id: p.id!, display: nameOf(p) })),
    listPractitioners: () =>
      store.all('Practitioner').map((p) => ({ id: p.id!, fhirUser: `Practitioner/${p.id}`, display: nameOf(p) })),
  };
}

/** Bearer token required and introspected; the token's audience must be this server. */
function authenticate(ehr: Ehr): express.RequestHandler {
  const { peer, options, baseUrl } = ehr;
  return (req: Request, res: Response, next: NextFunction) => {
    if (req.path.startsWith('/.well-known/')) return next('router');
    const entry = peer.log.start({
      method: req.method,
      path: `${EHR_PATHS.fhir}${req.path}`,
      query: req.query as Record<string, string>,
    });
    const started = Date.now();
    res.once('finish', () => {
      entry.status = res.statusCode;
      entry.ms = Date.now() - started;
    });
    res.locals['entry'] = entry;
    void (async () => {
      const token = /^Bearer\s+(\S+)$/i.exec(req.get('authorization') ?? '')?.[1];
      if (!token) {
        res.setHeader('WWW-Authenticate', 'Bearer');
        return outcome(res, 401, 'login', 'a Bearer access token is required');
      }
      entry.tokenFingerprint = fingerprint(token);
      const info = await options.introspect(token);
      entry.tokenIssuedHere = info !== undefined;
      if (!info) {
        res.setHeader('WWW-Authenticate', 'Bearer error="invalid_token"');
        return outcome(res, 401, 'login', 'the access token is unknown or expired');
      }
      entry.clientId = info.clientId;
      entry.scopes = info.scopes;
      if (info.audience && info.audience !== baseUrl)
        return outcome(res, 401, 'login', 'the access token is for another server');
      res.locals['token'] = info;
      next();
    })().catch(next);
  };
}

/** The granted access level for an interaction, or a 403 already answered. */
function allow(res: Response, type: string, interaction: Interaction) {
  const info = res.locals['token'] as AccessTokenInfo;
  const level = access(info.scopes, type, interaction);
  if (!level) {
    outcome(res, 403, 'forbidden', `the token's scopes do not allow ${interaction} on ${type}`);
    return undefined;
  }
  return { level, patient: info.patient };
}

/**
 * The `foreignPatientInSearch` fault: a resource of the searched type that belongs to another patient (a copy of a
 * stored one with its patient reference changed), as a faulty EHR might return it.
 */
function foreignResource(store: FhirStore, type: string): Resource | undefined {
  const model = store.search(type, {})[0];
  if (!model) return undefined;
  const copy = { ...structuredClone(model), id: `foreign-${model.id}` } as Resource;
  const key = ['subject', 'patient', 'beneficiary'].find((k) => copy[k] !== undefined) ?? 'subject';
  copy[key] = { reference: 'Patient/someone-else' };
  return copy;
}

function mountSearch(router: express.Router, ehr: Ehr): void {
  const { store, baseUrl } = ehr;
  // GET with the query, or POST to `_search` with the same parameters as a form body (long queries).
  const pages = new Map<string, Record<string, string>>();
  const search = (req: Request, res: Response, source: Record<string, unknown>) => {
    const type = String(req.params['type']);
    const granted = allow(res, type, 's');
    if (!granted) return;
    const given = Object.fromEntries(
      Object.entries(source).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : String(v)]),
    );
    // A next page names its search by an opaque id, as servers do (the query itself may be kilobytes of codes).
    const saved = given['_page'] ? pages.get(given['_page']) : undefined;
    if (given['_page'] && !saved) return outcome(res, 410, 'expired', 'this search page is no longer available');
    const params = saved ? { ...saved, _offset: given['_offset'] ?? '0' } : given;
    try {
      let hits = store.search(type, params);
      if (granted.level === 'compartment') hits = hits.filter((r) => inCompartment(r, granted.patient));
      const count = Math.min(Math.max(Number(params['_count'] ?? 50) || 50, 1), 200);
      const offset = Math.max(Number(params['_offset'] ?? 0) || 0, 0);
      const page = hits.slice(offset, offset + count);
      const pageId = given['_page'] ?? randomUUID();
      if (!saved && hits.length > count) {
        pages.set(pageId, params);
        if (pages.size > 10_000) pages.delete(pages.keys().next().value!);
      }
      const link = (o: number) => `${baseUrl}/${type}?_page=${pageId}&_count=${count}&_offset=${o}`;
      const faults = ehr.peer.faults.current;
      const foreign = faults.foreignPatientInSearch ? foreignResource(store, type) : undefined;
      if (foreign) page.push(foreign);
      const next = faults.nextLink ?? (offset + count < hits.length ? link(offset + count) : undefined);
      res.type('application/fhir+json').send(
        JSON.stringify({
          resourceType: 'Bundle',
          type: 'searchset',
          total: hits.length,
          link: [{ relation: 'self', url: link(offset) }, ...(next ? [{ relation: 'next', url: next }] : [])],
          entry: page.map((resource) => ({
            fullUrl: `${baseUrl}/${type}/${resource.id}`,
            resource,
            search: { mode: 'match' },
          })),
        }),
      );
    } catch (error) {
      if (error instanceof FhirStoreError) return outcome(res, error.status, error.code, error.message);
      throw error;
    }
  };
  router.get('/:type', (req, res) => search(req, res, req.query));
  router.post('/:type/_search', express.urlencoded({ extended: false, limit: '1mb' }), (req, res) =>
    search(req, res, (req.body ?? {}) as Record<string, unknown>),
  );
}

function mountReads(router: express.Router, ehr: Ehr): void {
  const { store } = ehr;
  const readOne = (req: Request, res: Response, found: Resource | undefined) => {
    const type = String(req.params['type']);
    const granted = allow(res, type, 'r');
    if (!granted) return;
    if (!found) return outcome(res, 404, 'not-found', `${type}/${req.params['id']} is not known`);
    if (granted.level === 'compartment' && !inCompartment(found, granted.patient)) {
      return outcome(res, 403, 'forbidden', 'outside the patient compartment of the token');
    }
    res.setHeader('ETag', etagOf(found));
    res.type('application/fhir+json').send(JSON.stringify(found));
  };
  router.get('/:type/:id', (req, res) =>
    readOne(req, res, store.read(String(req.params['type']), String(String(req.params['id'])))),
  );
  router.get('/:type/:id/_history/:vid', (req, res) =>
    readOne(
      req,
      res,
      store.vread(String(req.params['type']), String(String(req.params['id'])), String(req.params['vid'])),
    ),
  );
  router.get('/:type/:id/_history', (req, res) => {
    const type = String(req.params['type']);
    const granted = allow(res, type, 'r');
    if (!granted) return;
    const versions = store.history(type, String(String(req.params['id'])));
    if (versions.length === 0) return outcome(res, 404, 'not-found', 'no such resource');
    if (granted.level === 'compartment' && !inCompartment(versions[0]!, granted.patient))
      return outcome(res, 403, 'forbidden', 'outside the patient compartment of the token');
    res.type('application/fhir+json').send(
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'history',
        total: versions.length,
        entry: versions.map((resource) => ({ resource })),
      }),
    );
  });
}

/** create / conditional create / update, for a plain request or a transaction entry. */
function writer(ehr: Ehr): Write {
  const { store, options, behaviour } = ehr;
  return (
    res: Response,
    method: 'POST' | 'PUT',
    type: string,
    id: string | undefined,
    body: Resource,
    ifNoneExist?: string,
    ifMatch?: string,
  ): WriteResult => {
    if (!body || body.resourceType !== type)
      return { status: 400, error: [400, 'invalid', `the body must be a ${type}`] };
    const granted = allow(res, type, method === 'POST' ? 'c' : 'u');
    if (!granted) return { status: 403 };
    const client = (res.locals['token'] as AccessTokenInfo).clientId;
    if (DISCLOSURE_TYPES.has(type) && !isDiscloser(options, client))
      return {
        status: 403,
        error: [
          403,
          'forbidden',
          `${type} is written only by a disclosure client; ${client ?? 'this client'} is not one`,
        ],
      };
    if (granted.level === 'compartment' && !inCompartment(body, granted.patient))
      return { status: 403, error: [403, 'forbidden', 'outside the patient compartment of the token'] };
    if (method === 'POST') {
      if (ifNoneExist) {
        const existing = store.search(type, Object.fromEntries(new URLSearchParams(ifNoneExist)));
        if (existing.length > 1)
          return { status: 412, error: [412, 'duplicate', 'If-None-Exist matched several resources'] };
        if (existing.length === 1) return { status: 200, resource: existing[0]! };
      }
      const stored = store.create(body);
      if (behaviour.alterAttachments && type === 'DocumentReference') alterAttachment(stored);
      return { status: 201, resource: stored };
    }
    if (body.id !== id) return { status: 400, error: [400, 'invalid', 'the body id differs from the URL'] };
    const mismatch = ifMatch === undefined ? undefined : versionMismatch(store.read(type, id!), ifMatch);
    if (mismatch) return { status: 412, error: [412, 'conflict', mismatch] };
    const existed = store.read(type, id!) !== undefined;
    return { status: existed ? 200 : 201, resource: store.put(body) };
  };
}

function mountWrites(router: express.Router, ehr: Ehr, write: Write): void {
  const { baseUrl } = ehr;
  const send = (res: Response, type: string, result: WriteResult) => {
    if (res.headersSent) return;
    if (result.error) return outcome(res, ...result.error);
    if (result.resource) {
      res.setHeader('Location', `${baseUrl}/${type}/${result.resource.id}/_history/${result.resource.meta?.versionId}`);
      res.setHeader('ETag', etagOf(result.resource));
    }
    res.status(result.status).type('application/fhir+json').send(JSON.stringify(result.resource));
  };
  router.post('/:type', (req, res) => {
    const type = String(req.params['type']);
    try {
      send(res, type, write(res, 'POST', type, undefined, req.body as Resource, req.get('if-none-exist') ?? undefined));
    } catch (error) {
      if (error instanceof FhirStoreError) return outcome(res, error.status, error.code, error.message);
      throw error;
    }
  });
  router.put('/:type/:id', (req, res) =>
    send(
      res,
      String(req.params['type']),
      write(
        res,
        'PUT',
        String(req.params['type']),
        req.params['id'],
        req.body as Resource,
        undefined,
        req.get('if-match') ?? undefined,
      ),
    ),
  );
}

function mountTransaction(router: express.Router, ehr: Ehr, write: Write): void {
  const { store } = ehr;
  router.post('/', (req, res) => {
    const bundle = req.body as {
      resourceType?: string;
      type?: string;
      entry?: Array<{ resource?: Resource; request?: { method?: string; url?: string; ifNoneExist?: string } }>;
    };
    if (bundle?.resourceType !== 'Bundle' || (bundle.type !== 'transaction' && bundle.type !== 'batch')) {
      return outcome(res, 400, 'invalid', 'POST to the base takes a transaction or batch Bundle');
    }
    const entries = bundle.entry ?? [];
    for (const entry of entries) {
      const method = entry.request?.method;
      const type = (entry.request?.url ?? '').split('?')[0]!.split('/')[0];
      if ((method !== 'POST' && method !== 'PUT') || !type || !entry.resource) {
        return outcome(res, 400, 'not-supported', 'transaction entries must be POST or PUT with a resource');
      }
    }
    const run = () => {
      const responses = [];
      for (const entry of entries) {
        const method = entry.request!.method as 'POST' | 'PUT';
        const [type, id] = entry.request!.url!.split('?')[0]!.split('/');
        // A scratch response collects refusals without answering the whole request.
        const scratch = {
          locals: res.locals,
          headersSent: false,
          status: () => scratch,
          type: () => scratch,
          send: () => scratch,
          setHeader: () => scratch,
        } as unknown as Response;
        const result = write(scratch, method, type!, id, entry.resource!, entry.request?.ifNoneExist);
        if (result.status >= 400 && bundle.type === 'transaction') throw new TransactionRefused(result);
        responses.push({
          response: {
            status: String(result.status),
            ...(result.resource
              ? { location: `${type}/${result.resource.id}/_history/${result.resource.meta?.versionId}` }
              : {}),
          },
          ...(result.resource ? { resource: result.resource } : {}),
        });
      }
      return responses;
    };
    let responses;
    try {
      // A transaction is all or nothing: an entry refused after earlier ones were written undoes them.
      responses = bundle.type === 'transaction' ? store.atomically(run) : run();
    } catch (error) {
      if (!(error instanceof TransactionRefused)) throw error;
      return outcome(
        res,
        error.result.status,
        error.result.error?.[1] ?? 'forbidden',
        error.result.error?.[2] ?? 'an entry of the transaction was refused; nothing was written',
      );
    }
    res
      .type('application/fhir+json')
      .send(JSON.stringify({ resourceType: 'Bundle', type: `${bundle.type}-response`, entry: responses }));
  });
}
