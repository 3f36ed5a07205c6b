import express, { type NextFunction, type Request, type Response } from 'express';
import { PAYER_PATHS, type SandboxClientConfig } from '../shared/clients.js';
import type { PeerServer } from '../shared/peer-server.js';
import { fingerprint, notedUdapAuthentication, type RecordedRequest } from '../shared/request-log.js';
import { type Bundle, type FhirResource, PayerHttpError, operationOutcome } from './fhir.types.js';
import { type LoggedErrors, readLogErrorsInput } from './log-errors.usecase.js';
import { nextQuestion, nextQuestionOutput, readNextQuestionInput } from './next-question.usecase.js';
import { PackageStore } from './package-store.service.js';
import {
  type Interaction,
  type OidcContext,
  type RuntimeClientStore,
  createPayerAuthorizationServer,
  scopeAllows,
} from './payer-auth.service.js';
import {
  type DtrIgVersion,
  isDtrIgVersion,
  parseQuestionnairePackageInput,
  questionnairePackage,
} from './questionnaire-package.usecase.js';
import { type ReceivedSubmission, SUBMISSION_ROUTES, SubmissionLedger } from './submission.service.js';

export type { DtrIgVersion } from './questionnaire-package.usecase.js';
export { sandboxPackageDirs } from './package-store.service.js';

/**
 * Per-request override of the DTR version shaping `$questionnaire-package` responses
 * (`2.0.1`, `2.1` or `2.2`); takes precedence over `setIgVersion` and `defaultIgVersion`.
 */
export const DTR_VERSION_HEADER = 'x-sandbox-dtr-version';

export interface PayerOptions {
  peer: PeerServer;
  /** Backend Services clients (private_key_jwt; jwksUri or jwks). */
  clients: SandboxClientConfig[];
  /** Folders of FHIR JSON making questionnaire packages (with an optional rules.json each). */
  packageDirs: string[];
  /** Shape of $questionnaire-package responses; default '2.2'. */
  defaultIgVersion?: DtrIgVersion;
  /** Default 300. */
  accessTokenTtlSeconds?: number;
}

export interface PayerServer {
  fhirBase: string;
  tokenEndpoint: string;
  /** The token endpoint's client store, for clients registered at run time (UDAP). */
  clientStore: RuntimeClientStore;
  setIgVersion(v: DtrIgVersion): void;
  /** Exactly what was received, in order. */
  submissions(): ReceivedSubmission[];
  /** Bodies received by $log-questionnaire-errors. */
  loggedErrors(): unknown[];
  issuedTokenFingerprints(): Set<string>;
  /** Test-only: every access token it issued, raw (leak scans look for them). */
  issuedSecrets(): string[];
  /** The $questionnaire-package requests received, in order: the DTR shape, `changedsince`, and what was sent back. */
  packageRequests(): PackageRequestRecord[];
  /** Changes content as the payer would (a new questionnaire version, edited rules): see `PackageStore.publish`. */
  publish(resource: FhirResource): void;
  /**
   * The same DTR operations and submission routes, also served on another peer at `path` and authorized by that
   * peer's tokens: a test harness that is the EHR and the payer at once (the EHR's launch token reaches it).
   */
  mountHarness(peer: PeerServer, path: string, introspect: PayerAuth['introspect']): string;
  /** The content this payer serves now, by type and canonical. */
  content(resourceType: string, canonical: string): FhirResource | undefined;
  close(): Promise<void>;
}

interface PackageRequestRecord {
  version: DtrIgVersion;
  changedsince?: string;
  /** The element it came in: `valueInstant` (what every version's profile requires; anything else is refused). */
  changedsinceType?: string;
  questionnaires: string[];
  /** Questionnaires in the answer (0 when nothing changed since `changedsince`). */
  questionnairesReturned: number;
  resourcesReturned: number;
}

interface Caller {
  clientId: string;
  scopes: string[];
}

const FHIR_JSON = 'application/fhir+json';

/** What the payer remembers while it runs (what tests ask of it). */
interface PayerState {
  igVersion: DtrIgVersion;
  ledger: SubmissionLedger;
  loggedErrors: unknown[];
  /** The same reports, read: the version they were checked against, the questionnaire and the OperationOutcome. */
  logged: LoggedErrors[];
  packageRequests: PackageRequestRecord[];
  /** Fingerprints of the access tokens it issued. */
  issued: Set<string>;
  /** The access tokens it issued, raw (test-only: leak scans). */
  secrets: Set<string>;
}

type PayerAuth = Awaited<ReturnType<typeof createPayerAuthorizationServer>>;
type Guard = (resourceType: string | undefined, interaction: Interaction) => express.RequestHandler;

/**
 * The sandbox payer (dev/test only) on a peer server: Backend Services token endpoint, DTR operations,
 * the submission routes, all recorded in `peer.log`.
 */
export async function createPayerServer(options: PayerOptions): Promise<PayerServer> {
  const { peer } = options;
  const issuer = `${peer.origin}${PAYER_PATHS.auth}`;
  const fhirBase = `${peer.origin}${PAYER_PATHS.fhir}`;
  const store = await PackageStore.load(options.packageDirs);
  const auth = await createPayerAuthorizationServer(issuer, options.clients, options.accessTokenTtlSeconds ?? 300);
  const state: PayerState = {
    igVersion: options.defaultIgVersion ?? '2.2',
    ledger: new SubmissionLedger(),
    loggedErrors: [],
    logged: [],
    packageRequests: [],
    issued: new Set(),
    secrets: new Set(),
  };
  mountTokenEndpoint(peer, auth, state);
  peer.app.use(PAYER_PATHS.fhir, fhirRouter(peer, guardWith(auth), store, state));
  peer.app.get(PAYER_PATHS.submissions, (_req, res) => {
    res.json(state.ledger.all());
  });
  // Test controls: what $log-questionnaire-errors received, and the DTR version this payer speaks (switched at run time).
  peer.app.get('/_sandbox/logged-errors', (_req, res) => {
    res.json(state.logged);
  });
  peer.app.put('/_sandbox/dtr-version', express.json(), (req, res) => {
    const version = (req.body as { version?: unknown } | undefined)?.version;
    if (!isDtrIgVersion(version)) {
      res.status(400).json({ error: 'version must be 2.0.1, 2.1 or 2.2' });
      return;
    }
    state.igVersion = version;
    res.json({ version });
  });

  return {
    fhirBase,
    tokenEndpoint: auth.tokenEndpoint,
    clientStore: auth.clientStore,
    setIgVersion(v) {
      state.igVersion = v;
    },
    submissions: () => state.ledger.all(),
    loggedErrors: () => [...state.loggedErrors],
    issuedTokenFingerprints: () => new Set(state.issued),
    issuedSecrets: () => [...state.secrets],
    packageRequests: () => [...state.packageRequests],
    publish: (resource: FhirResource) => store.publish(resource),
    mountHarness(other, path, introspect) {
      other.app.use(path, fhirRouter(other, guardWith({ introspect }, true), store, state));
      return `${other.origin}${path}`;
    },
    content: (resourceType: string, canonical: string) => store.resolve(resourceType, canonical),
    close: () => peer.close(),
  };
}

/** Token endpoint: the provider parses its own body, so no JSON/urlencoded parser is mounted before it. */
function mountTokenEndpoint(peer: PeerServer, auth: PayerAuth, { issued, secrets }: PayerState): void {
  const tokenRequests = new WeakMap<object, RecordedRequest>();
  const clientOf = (ctx: OidcContext) => {
    const entry = tokenRequests.get(ctx.req);
    const clientId = ctx.oidc?.client?.clientId;
    if (entry && clientId) entry.clientId = clientId;
    const grantType = ctx.oidc?.params?.['grant_type'];
    if (entry && typeof grantType === 'string') entry.grant = { type: grantType };
  };
  auth.provider.on('grant.success', (ctx) => {
    clientOf(ctx);
    const token = (ctx.body as { access_token?: unknown } | undefined)?.access_token;
    if (typeof token === 'string') {
      issued.add(fingerprint(token));
      secrets.add(token);
      const entry = tokenRequests.get(ctx.req);
      if (entry) entry.tokenFingerprint = fingerprint(token);
    }
  });
  auth.provider.on('grant.error', (ctx) => clientOf(ctx));
  const callback = auth.provider.callback();
  peer.app.use(PAYER_PATHS.auth, (req: Request, res: Response) => {
    const entry = record(peer, req, res);
    tokenRequests.set(req, entry);
    res.once('finish', () => {
      const udap = notedUdapAuthentication(res.locals);
      if (udap) entry.udapAuthentication = udap;
    });
    callback(req, res);
  });
}

/**
 * Bearer token required (401); the scope must allow the interaction (403). With `anyScope` (the EHR-and-payer
 * harness, whose tokens are the EHR's user/patient tokens) a valid token is enough.
 */
function guardWith(auth: Pick<PayerAuth, 'introspect'>, anyScope = false): Guard {
  return (resourceType, interaction) =>
    (req: Request, res: Response, next: NextFunction): void => {
      void (async () => {
        const entry = res.locals['entry'] as RecordedRequest;
        const m = /^Bearer\s+(\S+)$/i.exec(req.get('authorization') ?? '');
        if (!m?.[1]) throw new PayerHttpError(401, 'login', 'a Bearer access token is required');
        entry.tokenFingerprint = fingerprint(m[1]);
        const info = await auth.introspect(m[1]);
        entry.tokenIssuedHere = info !== undefined;
        if (!info) throw new PayerHttpError(401, 'login', 'the access token is unknown or expired');
        entry.clientId = info.clientId;
        entry.scopes = info.scopes;
        if (!anyScope && resourceType && !scopeAllows(info.scopes, resourceType, interaction)) {
          throw new PayerHttpError(403, 'forbidden', `scope does not allow ${interaction} on ${resourceType}`);
        }
        res.locals['caller'] = { clientId: info.clientId, scopes: info.scopes } satisfies Caller;
      })().then(() => next(), next);
    };
}

const send = (res: Response, status: number, body: FhirResource) =>
  res.status(status).type(FHIR_JSON).send(JSON.stringify(body));

/** The payer's FHIR endpoints: DTR operations, `$expand`, the submission routes, one error mapping. */
function fhirRouter(peer: PeerServer, guard: Guard, store: PackageStore, state: PayerState): express.Router {
  const fhir = express.Router();
  fhir.use(express.json({ type: ['application/json', FHIR_JSON], limit: '10mb' }));
  fhir.use((req, res, next) => {
    res.locals['entry'] = record(peer, req, res);
    next();
  });
  mountDtrOperations(fhir, guard, store, state);
  // Submission routes from the table: each names the scope it requires.
  for (const route of SUBMISSION_ROUTES) {
    fhir.post(route.path, guard(route.scopeType, 'c'), (req, res) => {
      const result = state.ledger.submit(route, req.body, req.get('idempotency-key') ?? undefined);
      send(res, result.status, result.body);
    });
  }
  fhir.use((_req, _res, next) => next(new PayerHttpError(404, 'not-found', 'no such endpoint on the sandbox payer')));
  // One place maps errors to an OperationOutcome; unknown errors are a generic 500.
  fhir.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof PayerHttpError) {
      if (err.status === 401) res.setHeader('WWW-Authenticate', 'Bearer');
      return send(res, err.status, operationOutcome('error', err.code, err.message));
    }
    const status = (err as { status?: unknown }).status;
    if (status === 400 || status === 413)
      return send(res, status, operationOutcome('error', 'invalid', 'the body is not valid JSON'));
    return send(res, 500, operationOutcome('error', 'exception', 'internal error'));
  });
  return fhir;
}

function mountDtrOperations(fhir: express.Router, guard: Guard, store: PackageStore, state: PayerState): void {
  // @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/OperationDefinition-questionnaire-package.html
  fhir.post('/Questionnaire/$questionnaire-package', guard('Questionnaire', 'r'), (req, res) => {
    const override = req.get(DTR_VERSION_HEADER);
    if (override !== undefined && !isDtrIgVersion(override)) {
      throw new PayerHttpError(400, 'invalid', `${DTR_VERSION_HEADER} must be 2.0.1, 2.1 or 2.2`);
    }
    const version = override ?? state.igVersion;
    // Which coverages (and coverage-assertion id) each request carried, for tests and operators; before validation.
    const entry = res.locals['entry'] as RecordedRequest;
    const parameters = (req.body as { parameter?: unknown } | undefined)?.parameter;
    entry.coverages = (Array.isArray(parameters) ? (parameters as Array<Record<string, unknown>>) : [])
      .filter((p) => p?.['name'] === 'coverage')
      .map((p) => p['resource'] as { resourceType?: unknown; id?: unknown } | undefined)
      .map((c) => `${String(c?.resourceType ?? 'unknown')}/${String(c?.id ?? '')}`);
    const input = parseQuestionnairePackageInput(req.body, version);
    if (input.context) entry.context = input.context;
    const answer = questionnairePackage(store, input, version);
    const returned = (answer.parameter ?? []).flatMap((p) =>
      (p.resource as Bundle | undefined)?.resourceType === 'Bundle' ? ((p.resource as Bundle).entry ?? []) : [],
    );
    state.packageRequests.push({
      version,
      ...(input.changedsince ? { changedsince: input.changedsince, changedsinceType: input.changedsinceType } : {}),
      questionnaires: input.questionnaire,
      questionnairesReturned: returned.filter((e) => e.resource?.resourceType === 'Questionnaire').length,
      resourcesReturned: returned.length,
    });
    send(res, 200, answer);
  });

  // @see https://hl7.org/fhir/us/davinci-dtr/STU2.2/specification.html#adaptive-form-considerations
  fhir.post('/Questionnaire/$next-question', guard('Questionnaire', 'r'), (req, res) => {
    const override = req.get(DTR_VERSION_HEADER);
    if (override !== undefined && !isDtrIgVersion(override)) {
      throw new PayerHttpError(400, 'invalid', `${DTR_VERSION_HEADER} must be 2.0.1, 2.1 or 2.2`);
    }
    const version = override ?? state.igVersion;
    send(res, 200, nextQuestionOutput(nextQuestion(store, readNextQuestionInput(req.body, version)), version));
  });

  // Checked per DTR version (the payer's, or the request's override header); a wrong shape is a 400.
  fhir.post('/Questionnaire/$log-questionnaire-errors', guard(undefined, 'c'), (req, res) => {
    const override = req.get(DTR_VERSION_HEADER);
    const version = override !== undefined && isDtrIgVersion(override) ? override : state.igVersion;
    state.logged.push(readLogErrorsInput(req.body, version));
    state.loggedErrors.push(req.body);
    send(res, 200, operationOutcome('information', 'informational', 'errors recorded'));
  });

  const expand = (req: Request, res: Response) => {
    const fromBody = (
      (req.body as { parameter?: Array<{ name?: string; valueUri?: string }> } | undefined)?.parameter ?? []
    ).find((p) => p.name === 'url')?.valueUri;
    const url = typeof req.query['url'] === 'string' ? req.query['url'] : fromBody;
    if (!url) throw new PayerHttpError(400, 'required', 'url is required');
    const vs = store.expand(url);
    if (!vs) throw new PayerHttpError(404, 'not-found', `ValueSet ${url} is not known to this payer`);
    // Paged as servers page an expansion: `offset` and `count` (in the body or the query), `total` kept.
    const integer = (name: string) => {
      const part = (
        (req.body as { parameter?: Array<{ name?: string; valueInteger?: number }> } | undefined)?.parameter ?? []
      ).find((p) => p.name === name)?.valueInteger;
      const value = Number(req.query[name] ?? part);
      return Number.isInteger(value) && value >= 0 ? value : undefined;
    };
    const offset = integer('offset');
    const count = integer('count');
    const expansion = vs['expansion'] as { contains?: unknown[] } & Record<string, unknown>;
    if ((offset === undefined && count === undefined) || !Array.isArray(expansion.contains)) {
      send(res, 200, vs);
      return;
    }
    const start = offset ?? 0;
    const contains = expansion.contains.slice(start, count === undefined ? undefined : start + count);
    send(res, 200, { ...vs, expansion: { ...expansion, total: expansion.contains.length, offset: start, contains } });
  };
  fhir.get('/ValueSet/$expand', guard('ValueSet', 'r'), expand);
  fhir.post('/ValueSet/$expand', guard('ValueSet', 'r'), expand);
}

/** Starts a request-log entry; status and duration are filled in when the response finishes. */
function record(peer: PeerServer, req: Request, res: Response): RecordedRequest {
  const started = performance.now();
  const url = new URL(req.originalUrl, 'http://sandbox');
  const query: Record<string, string | string[]> = {};
  for (const key of new Set(url.searchParams.keys())) {
    const all = url.searchParams.getAll(key);
    query[key] = all.length === 1 ? (all[0] ?? '') : all;
  }
  const entry = peer.log.start({ method: req.method, path: url.pathname, query });
  res.once('finish', () => {
    entry.status = res.statusCode;
    entry.ms = Math.round(performance.now() - started);
  });
  return entry;
}
