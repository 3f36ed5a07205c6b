import { DtrError } from './dtr-error.js';

export interface JsonLimits {
  /** Deepest allowed nesting of arrays and objects. */
  maxDepth: number;
  /** Largest allowed text, in bytes (UTF-8). */
  maxBytes: number;
}

const DEFAULT_JSON_LIMITS: JsonLimits = { maxDepth: 64, maxBytes: 5 * 1024 * 1024 };

/**
 * Parses untrusted JSON text. Rejects, before anything is built from it:
 * - text over `maxBytes` (PAYLOAD_TOO_LARGE),
 * - nesting deeper than `maxDepth` (deep JSON that JSON.parse accepts overflows the stack later in
 *   JSON.stringify/structuredClone),
 * - `__proto__` and `constructor` keys (they change prototypes through Object.assign, spreads and merges),
 * - NUL characters anywhere (PostgreSQL jsonb refuses `\u0000`).
 */
export function parseUntrustedJson(text: string, limits: JsonLimits = DEFAULT_JSON_LIMITS): unknown {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > limits.maxBytes) {
    throw new DtrError('PAYLOAD_TOO_LARGE', `JSON body of ${bytes} bytes exceeds the limit of ${limits.maxBytes}`, {
      details: { limitBytes: limits.maxBytes },
    });
  }
  assertDepthWithin(text, limits.maxDepth);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new DtrError('INVALID_INPUT', 'body is not valid JSON', { cause });
  }
  assertNoForbiddenContent(value);
  return value;
}

/** A single pass over the text counting bracket depth outside strings; no allocation. */
function assertDepthWithin(text: string, maxDepth: number): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth > maxDepth) {
        throw new DtrError('INVALID_INPUT', `JSON nesting exceeds the limit of ${maxDepth} levels`, {
          details: { limitDepth: maxDepth },
        });
      }
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
}

function assertNoForbiddenContent(root: unknown): void {
  // Iterative walk: depth is already bounded, but an explicit stack keeps this safe regardless.
  const stack: Array<{ value: unknown; path: string }> = [{ value: root, path: '$' }];
  while (stack.length > 0) {
    const { value, path } = stack.pop()!;
    if (typeof value === 'string') {
      if (value.includes('\u0000')) {
        throw new DtrError('INVALID_INPUT', `NUL character in a string at ${path}`, { expression: [path] });
      }
    } else if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) stack.push({ value: value[i], path: `${path}[${i}]` });
    } else if (value !== null && typeof value === 'object') {
      for (const key of Object.keys(value)) {
        if (key === '__proto__' || key === 'constructor') {
          throw new DtrError('INVALID_INPUT', `forbidden key "${key}" at ${path}`, { expression: [path] });
        }
        if (key.includes('\u0000')) {
          throw new DtrError('INVALID_INPUT', `NUL character in a key at ${path}`, { expression: [path] });
        }
        stack.push({ value: (value as Record<string, unknown>)[key], path: `${path}.${key}` });
      }
    }
  }
}
