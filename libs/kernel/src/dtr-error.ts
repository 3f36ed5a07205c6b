/**
 * The one error type of the project. Every failure that can reach a caller carries a stable code;
 * lower-layer errors are wrapped once, at the edge of the lib that saw them, with `cause`.
 */
const DTR_ERROR_CODES = {
  // input at the edge
  INVALID_INPUT: { status: 400, issue: 'invalid' },
  PAYLOAD_TOO_LARGE: { status: 413, issue: 'too-costly' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, issue: 'not-supported' },
  // identity and access
  UNAUTHENTICATED: { status: 401, issue: 'login' },
  FORBIDDEN: { status: 403, issue: 'forbidden' },
  TOO_MANY_REQUESTS: { status: 429, issue: 'throttled' },
  // resources
  NOT_FOUND: { status: 404, issue: 'not-found' },
  CONFLICT: { status: 409, issue: 'conflict' },
  GONE: { status: 410, issue: 'deleted' },
  // peers (EHR, payer)
  UPSTREAM_ERROR: { status: 502, issue: 'transient' },
  UPSTREAM_TIMEOUT: { status: 504, issue: 'timeout' },
  // ourselves
  NOT_READY: { status: 503, issue: 'transient' },
  CONFIGURATION: { status: 500, issue: 'exception' },
  INTERNAL: { status: 500, issue: 'exception' },
} as const satisfies Record<string, { status: number; issue: string }>;

export type DtrErrorCode = keyof typeof DTR_ERROR_CODES;

export interface DtrErrorOptions {
  cause?: unknown;
  /** Safe, PHI-free details that may be shown to the caller (e.g. the name of a bad field). */
  details?: Readonly<Record<string, string | number | boolean>>;
  /** FHIRPath-like locations of the problem in the input, for OperationOutcome.issue.expression. */
  expression?: readonly string[];
  /**
   * For an error whose message is for the operator (CONFIGURATION, INTERNAL): what a user is told instead, in plain
   * words (no command lines, secrets or data). Without it a user is told only that an internal error occurred.
   */
  userMessage?: string;
}

export class DtrError extends Error {
  override readonly name = 'DtrError';
  readonly code: DtrErrorCode;
  readonly details: Readonly<Record<string, string | number | boolean>>;
  readonly expression: readonly string[];
  readonly userMessage: string | undefined;

  constructor(code: DtrErrorCode, message: string, options: DtrErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
    this.expression = options.expression ?? [];
    this.userMessage = options.userMessage;
  }

  /**
   * What a caller may be shown: the message, which is ours and safe, for input, access and peer problems; for our own
   * faults (CONFIGURATION, INTERNAL), whose message is for the operator, only the `userMessage`, if any.
   */
  get publicMessage(): string | undefined {
    return this.code === 'CONFIGURATION' || this.code === 'INTERNAL' ? this.userMessage : this.message;
  }

  get httpStatus(): number {
    return DTR_ERROR_CODES[this.code].status;
  }

  /** The OperationOutcome.issue.code (http://hl7.org/fhir/valueset-issue-type.html) for this error. */
  get issueType(): string {
    return DTR_ERROR_CODES[this.code].issue;
  }

  static is(value: unknown, code?: DtrErrorCode): value is DtrError {
    return value instanceof DtrError && (code === undefined || value.code === code);
  }
}

export function isDtrErrorCode(value: string): value is DtrErrorCode {
  return Object.prototype.hasOwnProperty.call(DTR_ERROR_CODES, value);
}
