import type { NextFunction, Request, Response } from 'express';

/**
 * Faults a test can switch on at run time for one peer (in-process through `FaultInjector.set`, or over
 * HTTP through `PUT /_sandbox/faults`). Control endpoints under `/_sandbox/` are never faulted.
 */
export interface FaultSettings {
  /** Added to every response, in milliseconds. */
  latencyMs?: number;
  /** Probability (0..1) that a request is answered with `errorStatus` instead of being handled. */
  errorRate?: number;
  /** Status used for injected errors: 500, 502, 503 or 429 (429 and 503 carry Retry-After: 1). */
  errorStatus?: number;
  /**
   * The injected OperationOutcome's diagnostics (default `injected fault`): a test plants a marker here (as an EHR's
   * error text may quote a patient or a token) and checks it never reaches a browser or a log.
   */
  errorDiagnostics?: string;
  /** Deterministic variant: the next N requests fail with `errorStatus`. */
  failNext?: number;
  /** Requests are accepted and never answered (the client must time out). */
  hang?: boolean;
  /** The request is fully handled (writes committed), then the connection is destroyed with no response. */
  dropResponseAfterCommit?: boolean;
  /** New connections are refused: the peer's listening socket is closed until this is switched off. */
  refuseConnections?: boolean;
  /** Requests are answered 200 with this text as `application/fhir+json` (hostile or broken JSON), unhandled. */
  rawBody?: string;
  /**
   * The handler's answer is followed by this many bytes of JSON whitespace, streamed without a Content-Length (a
   * valid but oversized answer that only counting can stop).
   */
  padBytes?: number;
  /** EHR searches: one resource of the searched type from another patient's record is added to each page. */
  foreignPatientInSearch?: boolean;
  /** EHR searches: each page's `next` link is this URL. */
  nextLink?: string;
  /**
   * UDAP discovery (`{base}/.well-known/udap`) answers with signed metadata that has this defect: a signature that does
   * not verify, a certificate from a CA outside the community, an expired certificate, or a certificate whose SAN URI
   * is not the server's base URL.
   */
  udapMetadata?: 'bad-signature' | 'untrusted-anchor' | 'expired-certificate' | 'san-mismatch';
  /**
   * UDAP discovery leaves these out of `udap_profiles_supported` (e.g. `udap_to`: a server that does not offer Tiered
   * OAuth); the server's behaviour is unchanged.
   */
  udapProfilesOmitted?: string[];
  /** Only apply the faults to requests whose path starts with one of these (default: all). */
  paths?: string[];
}

/** Streams the answer the handler sends, then `bytes` of spaces, in chunks and without a Content-Length. */
function padAnswer(res: Response, bytes: number): void {
  const send = res.send.bind(res);
  res.send = ((body?: unknown) => {
    if (res.statusCode !== 200 || (typeof body !== 'string' && !Buffer.isBuffer(body))) return send(body);
    res.removeHeader('Content-Length');
    res.write(body);
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    let left = bytes;
    const more = (): void => {
      while (left > 0) {
        const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
        left -= piece.length;
        if (!res.write(piece)) {
          res.once('drain', more);
          return;
        }
      }
      res.end();
    };
    res.once('close', () => (left = 0));
    more();
    return res;
  }) as typeof res.send;
}

export class FaultInjector {
  private settings: FaultSettings = {};
  private readonly listeners = new Set<(settings: FaultSettings) => void>();

  get current(): FaultSettings {
    return { ...this.settings };
  }

  set(settings: FaultSettings): void {
    this.settings = { ...settings };
    for (const listener of this.listeners) listener(this.current);
  }

  clear(): void {
    this.set({});
  }

  /** Called when settings change (the server uses it to close/reopen its listener for refuseConnections). */
  onChange(listener: (settings: FaultSettings) => void): void {
    this.listeners.add(listener);
  }

  middleware() {
    return (req: Request, res: Response, next: NextFunction): void => {
      const s = this.settings;
      if (req.path.startsWith('/_sandbox/')) return next();
      if (s.paths && !s.paths.some((p) => req.path.startsWith(p))) return next();
      if (s.hang) return; // never answered
      const proceed = () => {
        let fail = false;
        if (s.failNext && s.failNext > 0) {
          s.failNext--;
          fail = true;
        } else if (s.errorRate && Math.random() < s.errorRate) {
          fail = true;
        }
        if (fail) {
          const status = s.errorStatus ?? 503;
          if (status === 429 || status === 503) res.setHeader('Retry-After', '1');
          res
            .status(status)
            .type('application/fhir+json')
            .send(
              JSON.stringify({
                resourceType: 'OperationOutcome',
                issue: [
                  {
                    severity: 'error',
                    code: status === 429 ? 'throttled' : 'transient',
                    diagnostics: s.errorDiagnostics ?? 'injected fault',
                  },
                ],
              }),
            );
          return;
        }
        if (s.rawBody !== undefined) {
          res.status(200).type('application/fhir+json').send(s.rawBody);
          return;
        }
        if (s.padBytes && s.padBytes > 0) padAnswer(res, s.padBytes);
        if (s.dropResponseAfterCommit) {
          // Let the handler run to completion, then drop the connection instead of answering.
          const socket = res.socket;
          const originalEnd = res.end.bind(res);
          (res as unknown as { end: (...args: unknown[]) => Response }).end = () => {
            socket?.destroy();
            return res;
          };
          void originalEnd;
        }
        next();
      };
      if (s.latencyMs && s.latencyMs > 0) setTimeout(proceed, s.latencyMs);
      else proceed();
    };
  }
}
