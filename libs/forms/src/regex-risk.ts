/**
 * Whether a regular expression from a payer may backtrack exponentially on what a clinician types (ReDoS), judged
 * from its text alone. The judgement is conservative: a pattern it cannot prove harmless in this simple sense is
 * risky. It looks for the shapes that backtrack exponentially in a backtracking engine such as JavaScript's:
 * - a repeated part that itself repeats: `(a+)+`, `(\w*\s?)*`, `(x{1,9}){2,}`;
 * - a repeated part with alternatives: `(a|ab)*` (alternatives that are single distinct characters are fine);
 * - a repeated part that can match nothing: `(a?)*`;
 * - a backreference, or a pattern too long or too deeply nested to judge.
 * Polynomial shapes (`\d+\d+$`) are not flagged: on what a person types they end quickly.
 */

type Node =
  | { kind: 'seq'; items: Node[] }
  | { kind: 'alt'; branches: Node[] }
  | { kind: 'group'; child: Node }
  | { kind: 'repeat'; child: Node; min: number; max: number }
  | { kind: 'char'; text: string }
  | { kind: 'set' }
  | { kind: 'assert' }
  | { kind: 'backref' };

const MAX_PATTERN_LENGTH = 1000;
const MAX_DEPTH = 20;

class RegexReader {
  private at = 0;
  private depth = 0;
  constructor(private readonly source: string) {}

  read(): Node {
    const node = this.alternation();
    if (this.at < this.source.length) throw new Error(`unexpected "${this.source[this.at]}" at ${this.at}`);
    return node;
  }

  private alternation(): Node {
    const branches = [this.sequence()];
    while (this.source[this.at] === '|') {
      this.at++;
      branches.push(this.sequence());
    }
    return branches.length === 1 ? branches[0]! : { kind: 'alt', branches };
  }

  private sequence(): Node {
    const items: Node[] = [];
    while (this.at < this.source.length && this.source[this.at] !== '|' && this.source[this.at] !== ')') {
      items.push(this.quantified(this.atom()));
    }
    return items.length === 1 ? items[0]! : { kind: 'seq', items };
  }

  private quantified(atom: Node): Node {
    const c = this.source[this.at];
    let bounds: [number, number] | undefined;
    if (c === '*') bounds = [0, Infinity];
    else if (c === '+') bounds = [1, Infinity];
    else if (c === '?') bounds = [0, 1];
    else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.source.slice(this.at));
      if (m) {
        const min = Number(m[1]);
        const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        this.at += m[0].length - 1;
        bounds = [min, max];
      }
    }
    if (!bounds) return atom;
    if (atom.kind === 'assert') throw new Error('a quantified assertion');
    this.at++;
    if (this.source[this.at] === '?') this.at++; // lazy: the same backtracking, in another order
    if (/^([*+?]|\{\d+(,\d*)?\})/.test(this.source.slice(this.at))) throw new Error(`nothing to repeat at ${this.at}`);
    return { kind: 'repeat', child: atom, min: bounds[0], max: bounds[1] };
  }

  private atom(): Node {
    const c = this.source[this.at]!;
    if (c === '(') return this.group();
    if (c === '[') return this.set();
    if (c === '\\') return this.escape();
    if (c === '^' || c === '$') {
      this.at++;
      return { kind: 'assert' };
    }
    if (c === '.') {
      this.at++;
      return { kind: 'set' };
    }
    if ('*+?'.includes(c)) throw new Error(`nothing to repeat at ${this.at}`);
    this.at++;
    return { kind: 'char', text: c };
  }

  private group(): Node {
    if (++this.depth > MAX_DEPTH) throw new Error('nested too deeply');
    this.at++;
    let assertion = false;
    const rest = this.source.slice(this.at);
    const prefix = /^\?(?::|=|!|<=|<!|<[A-Za-z_$][\w$]*>)/.exec(rest);
    if (prefix) {
      assertion = /^\?(=|!|<=|<!)/.test(prefix[0]);
      this.at += prefix[0].length;
    } else if (rest.startsWith('?')) throw new Error(`an unknown group at ${this.at}`);
    const child = this.alternation();
    if (this.source[this.at] !== ')') throw new Error('an unclosed group');
    this.at++;
    this.depth--;
    // A lookaround matches nothing itself, but what it holds still backtracks: judged through its child.
    return assertion
      ? { kind: 'seq', items: [{ kind: 'assert' }, { kind: 'group', child }] }
      : { kind: 'group', child };
  }

  private set(): Node {
    this.at++;
    if (this.source[this.at] === '^') this.at++;
    if (this.source[this.at] === ']') this.at++;
    while (this.at < this.source.length && this.source[this.at] !== ']') {
      if (this.source[this.at] === '\\') this.at++;
      this.at++;
    }
    if (this.source[this.at] !== ']') throw new Error('an unclosed character class');
    this.at++;
    return { kind: 'set' };
  }

  private escape(): Node {
    this.at++;
    const c = this.source[this.at];
    if (c === undefined) throw new Error('a trailing backslash');
    this.at++;
    if (/[1-9]/.test(c) || (c === 'k' && this.source[this.at] === '<')) return { kind: 'backref' };
    if ('bB'.includes(c)) return { kind: 'assert' };
    if ('dDwWsS'.includes(c)) return { kind: 'set' };
    if (c === 'p' || c === 'P') {
      const m = /^\{[^}]*\}/.exec(this.source.slice(this.at));
      if (m) this.at += m[0].length;
      return { kind: 'set' };
    }
    if (c === 'u' || c === 'x') {
      const m = c === 'x' ? /^[0-9a-fA-F]{2}/ : /^(\{[0-9a-fA-F]+\}|[0-9a-fA-F]{4})/;
      const hex = m.exec(this.source.slice(this.at));
      if (hex) this.at += hex[0].length;
      return { kind: 'char', text: `\\${c}${hex?.[0] ?? ''}` };
    }
    return { kind: 'char', text: `\\${c}` };
  }
}

const repeats = (node: Node): boolean => {
  switch (node.kind) {
    case 'repeat':
      return node.max > 1 || repeats(node.child);
    case 'seq':
      return node.items.some(repeats);
    case 'alt':
      return node.branches.some(repeats);
    case 'group':
      return repeats(node.child);
    default:
      return false;
  }
};

const canBeEmpty = (node: Node): boolean => {
  switch (node.kind) {
    case 'repeat':
      return node.min === 0 || canBeEmpty(node.child);
    case 'seq':
      return node.items.every(canBeEmpty);
    case 'alt':
      return node.branches.some(canBeEmpty);
    case 'group':
      return canBeEmpty(node.child);
    case 'assert':
      return true;
    default:
      return false;
  }
};

/** Alternatives that are each one literal character, all different: `(a|b|-)*` cannot backtrack among them. */
const distinctCharacters = (branches: Node[]): boolean => {
  const texts = branches.map((b) => (b.kind === 'group' ? b.child : b)).map((b) => (b.kind === 'char' ? b.text : null));
  return texts.every((t) => t !== null) && new Set(texts).size === texts.length;
};

const hasRiskyAlternation = (node: Node): boolean => {
  switch (node.kind) {
    case 'alt':
      return !distinctCharacters(node.branches) || node.branches.some(hasRiskyAlternation);
    case 'seq':
      return node.items.some(hasRiskyAlternation);
    case 'group':
    case 'repeat':
      return hasRiskyAlternation(node.child);
    default:
      return false;
  }
};

function riskIn(node: Node): string | undefined {
  switch (node.kind) {
    case 'backref':
      return 'it uses a backreference';
    case 'seq':
      return node.items.map(riskIn).find(Boolean);
    case 'alt':
      return node.branches.map(riskIn).find(Boolean);
    case 'group':
      return riskIn(node.child);
    case 'repeat':
      if (node.max > 1) {
        if (repeats(node.child)) return 'a repeated part repeats inside itself (nested quantifiers)';
        if (hasRiskyAlternation(node.child)) return 'a repeated part has alternatives that can overlap';
        if (canBeEmpty(node.child)) return 'a repeated part can match nothing';
      }
      return riskIn(node.child);
    default:
      return undefined;
  }
}

/** Why `pattern` may backtrack exponentially, or undefined when its shape cannot. */
export function regexBacktrackRisk(pattern: string): string | undefined {
  if (pattern.length > MAX_PATTERN_LENGTH) return `it is longer than ${MAX_PATTERN_LENGTH} characters`;
  let tree: Node;
  try {
    tree = new RegexReader(pattern).read();
  } catch (error) {
    return `it could not be read (${(error as Error).message})`;
  }
  return riskIn(tree);
}
