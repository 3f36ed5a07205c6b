import { createHash } from 'node:crypto';

/** Which sandbox peer saw the request. */
export type PeerName = 'ehr' | 'payer';

export interface RecordedRequest {
  seq: number;
  at: string;
  peer: PeerName;
  method: string;
  /** Path without the query string. */
  path: string;
  /** Query parameters as received (the sandbox is test-only; tests assert on them). */
  query: Record<string, string | string[]>;
  /** OAuth client the request was made as (from the access token, or client authentication at /token). */
  clientId?: string;
  /** Scopes of the access token used, when there was one. */
  scopes?: string[];
  /** First 16 hex characters of SHA-256 of the bearer token presented, if any. Never the token itself. */
  tokenFingerprint?: string;
  /** Whether the presented bearer token was issued by this same peer. */
  tokenIssuedHere?: boolean;
  /** Payer DTR operations: the Coverage(s) the request carried (`Coverage/<id>`) and its `context` (assertion id). */
  coverages?: string[];
  context?: string;
  status?: number;
  ms?: number;
  /**
   * At a token endpoint: the grant type, and for a refresh the fingerprint of the refresh token presented (so a refresh
   * token exchanged twice, by two instances racing, is visible). Never the token itself.
   */
  grant?: { type: string; refreshTokenFingerprint?: string };
  /**
   * At a UDAP registration endpoint: the claims of the software statement posted, as sent (whether or not it was
   * accepted; never its signature). Absent when the body held no readable JWT.
   */
  softwareStatement?: Record<string, unknown>;
  /**
   * At a token endpoint: the UDAP authentication token that passed the sandbox's checks (its JOSE header, `x5c`
   * included, and its claims; never the signature), with the form's `udap` value.
   */
  udapAuthentication?: UdapAuthenticationSeen;
}

export interface UdapAuthenticationSeen {
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
  udap: string | null;
}

const UDAP_SEEN = 'sandboxUdapAuthentication';

/** Left on the response by a UDAP token guard, for the log entry the authorization server behind it makes. */
export function noteUdapAuthentication(locals: Record<string, unknown>, seen: UdapAuthenticationSeen): void {
  locals[UDAP_SEEN] = seen;
}

/** What {@link noteUdapAuthentication} left on this response, if anything. */
export function notedUdapAuthentication(locals: Record<string, unknown>): UdapAuthenticationSeen | undefined {
  return locals[UDAP_SEEN] as UdapAuthenticationSeen | undefined;
}

export function fingerprint(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 16);
}

/** Everything a peer received, in order, so tests can assert what our server did and did not ask for. */
export class RequestLog {
  private readonly entries: RecordedRequest[] = [];
  private seq = 0;

  constructor(
    readonly peer: PeerName,
    private readonly capacity = 20_000,
  ) {}

  start(entry: Omit<RecordedRequest, 'seq' | 'at' | 'peer'>): RecordedRequest {
    const recorded: RecordedRequest = { seq: ++this.seq, at: new Date().toISOString(), peer: this.peer, ...entry };
    this.entries.push(recorded);
    if (this.entries.length > this.capacity) this.entries.shift();
    return recorded;
  }

  all(): RecordedRequest[] {
    return [...this.entries];
  }

  /** Entries after the given sequence number (use `mark()` before an action, then `since(mark)`). */
  since(seq: number): RecordedRequest[] {
    return this.entries.filter((e) => e.seq > seq);
  }

  mark(): number {
    return this.seq;
  }

  clear(): void {
    this.entries.length = 0;
  }
}
