/**
 * A regular expression as a table over a model's tokens (runtime/pattern.py, which uses interegular): a
 * parser for a subset of Python `re` syntax whose meaning is the same in both (characters, `.`, classes with
 * ranges and negation, the ASCII escapes \d \w \s and their negations, groups, `|`, and the repeats * + ? {m}
 * {m,} {,n} {m,n}, lazy or not), then Thompson's construction and the subset construction over the model's
 * characters. What the subset leaves out is refused with a message saying so, never read another way.
 */
import { SeqgenError, pyRepr, shownPattern } from './errors.js';

export const MAX_PATTERN_CHARS = 10_000;
/** Largest repeat count and number of automaton nodes a pattern may build (bounded memory). */
const MAX_REPEAT = 1_000;
const MAX_NODES = 200_000;
const ANCHORS = 'anchors (^ $ \\A \\Z \\b \\B)';
const DIGIT = (c) => c >= '0' && c <= '9';
const WORD = (c) => /^[A-Za-z0-9_]$/.test(c);
const SPACE = (c) => ' \t\n\r\f\v'.includes(c);
/** The class escapes, with interegular's ASCII reading (a character outside ASCII is never \w, \d or \s). */
const CLASSES = { d: DIGIT, w: WORD, s: SPACE, D: (c) => !DIGIT(c), W: (c) => !WORD(c), S: (c) => !SPACE(c) };
const CONTROLS = { n: '\n', t: '\t', r: '\r', f: '\f', v: '\v' };
const PUNCTUATION = /^[!-/:-@[-`{-~]$/;

/** A pattern the Python runtime refuses as not regular: its message, word for word. */
function notRegular(pattern, what) {
  return new SeqgenError(`pattern ${shownPattern(pattern)} uses ${what}, which constrained generation cannot follow; ` +
    'rewrite it without them (the whole text must match, so anchors are implied)');
}

/** Parses one pattern into a tree: {char: test}, {cat: [...]}, {alt: [...]}, {repeat, min, max (null: no bound)}. */
class Parser {
  constructor(pattern) {
    this.pattern = pattern;
    this.cs = [...pattern];
    this.i = 0;
  }

  invalid(reason, at = this.i) {
    return new SeqgenError(`pattern ${shownPattern(this.pattern)} is not a valid regular expression (${reason} at position ${at})`);
  }

  unsupported(what) {
    return new SeqgenError(`pattern ${shownPattern(this.pattern)} uses ${what}, which the browser's pattern compiler does ` +
      'not support yet; rewrite it with characters, ., [classes], groups, |, * + ? {m,n} and the escapes ' +
      '\\d \\w \\s \\n \\t, or use the Python runtime');
  }

  get peek() {
    return this.cs[this.i];
  }

  parse() {
    const tree = this.alternatives();
    if (this.i < this.cs.length) throw this.invalid('unbalanced parenthesis');
    return tree;
  }

  alternatives() {
    const options = [this.sequence()];
    while (this.peek === '|') {
      this.i++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0] : { alt: options };
  }

  sequence() {
    const items = [];
    while (this.i < this.cs.length && this.peek !== '|' && this.peek !== ')') items.push(this.repeated(this.atom()));
    return { cat: items };
  }

  /** `node` with the repeat that follows it, if any. */
  repeated(node) {
    const at = this.i;
    let min;
    let max;
    if ('*+?'.includes(this.peek ?? 'x')) {
      [min, max] = { '*': [0, null], '+': [1, null], '?': [0, 1] }[this.cs[this.i++]];
    } else if (this.peek === '{') {
      const bound = /^\{(\d*)(,(\d*))?\}/.exec(this.cs.slice(this.i, this.i + 24).join(''));
      if (!bound || (bound[1] === '' && bound[3] === undefined)) throw this.unsupported("a '{' that is not a repeat");
      if (bound[1] === '' && bound[3] === '') throw this.unsupported('{,}');
      min = bound[1] === '' ? 0 : Number(bound[1]);
      max = bound[2] === undefined ? min : bound[3] === '' ? null : Number(bound[3]);
      if (max !== null && min > max) throw this.invalid('min repeat greater than max repeat', at + 1);
      if (Math.max(min, max ?? 0) > MAX_REPEAT) throw this.unsupported(`repeat counts above ${MAX_REPEAT}`);
      this.i += [...bound[0]].length;
    } else {
      return node;
    }
    if (this.peek === '?') this.i++;  // lazy: the same texts match
    if (this.peek === '+') throw this.unsupported('a possessive repeat');
    if (this.peek === '{') throw this.unsupported("a '{' after a repeat");
    if ('*?'.includes(this.peek ?? 'x')) throw this.invalid('multiple repeat');
    return { repeat: node, min, max };
  }

  atom() {
    const c = this.cs[this.i++];
    if (c === '(') return this.group();
    if (c === '[') return this.set();
    if (c === '.') return { char: (x) => x !== '\n' };
    if (c === '^' || c === '$') throw notRegular(this.pattern, ANCHORS);
    if (c === '\\') return this.escape(false);
    if ('*+?'.includes(c)) throw this.invalid('nothing to repeat', this.i - 1);
    if ('{}]'.includes(c)) throw this.unsupported(`a bare ${pyRepr(c)}`);
    return { char: (x) => x === c };
  }

  group() {
    const start = this.i - 1;
    if (this.peek === '?') {
      const head = this.cs.slice(this.i, this.i + 4).join('');
      if (/^\?(=|!|<=|<!)/.test(head)) throw notRegular(this.pattern, 'lookarounds');
      if (head.startsWith('?P=')) throw notRegular(this.pattern, 'backreferences');
      const named = /^\?P<[A-Za-z_][A-Za-z0-9_]*>/.exec(this.cs.slice(this.i, this.i + 200).join(''));
      if (head.startsWith('?:')) this.i += 2;
      else if (named) this.i += named[0].length;
      else throw this.unsupported(`the group ${pyRepr(`(${head}`)}...`);
    }
    const inner = this.alternatives();
    if (this.peek !== ')') throw this.invalid('missing ), unterminated subpattern', start);
    this.i++;
    return inner;
  }

  /** One escape: a class (in a set too), a control character, or a punctuation character. */
  escape(inSet) {
    const c = this.cs[this.i++];
    if (c === undefined) throw this.invalid('bad escape (end of pattern)', this.i - 1);
    if (!inSet && 'AZbB'.includes(c)) throw notRegular(this.pattern, ANCHORS);
    if (!inSet && c >= '1' && c <= '9') throw notRegular(this.pattern, 'backreferences');
    if (CLASSES[c]) return { char: CLASSES[c], isClass: true };
    if (CONTROLS[c]) return { char: (x) => x === CONTROLS[c], literal: CONTROLS[c] };
    if (PUNCTUATION.test(c)) return { char: (x) => x === c, literal: c };
    throw this.unsupported(`the escape ${pyRepr('\\' + c)}`);
  }

  /** A character set [...] or [^...]. */
  set() {
    const start = this.i - 1;
    const negated = this.peek === '^';
    if (negated) this.i++;
    if (this.peek === ']') throw this.unsupported("a set that starts with ']'");
    const tests = [];
    while (this.peek !== ']') {
      if (this.i >= this.cs.length) throw this.invalid('unterminated character set', start);
      const from = this.member();
      if (this.peek === '-' && this.cs[this.i + 1] !== ']' && this.cs[this.i + 1] !== undefined) {
        const at = this.i - 1;
        this.i++;
        const to = this.member();
        if (from.literal === undefined || to.literal === undefined) throw this.unsupported('a range with a class escape');
        const [low, high] = [from.literal.codePointAt(0), to.literal.codePointAt(0)];
        if (low > high) throw this.invalid(`bad character range ${from.literal}-${to.literal}`, at);
        tests.push((x) => x.codePointAt(0) >= low && x.codePointAt(0) <= high);
      } else {
        tests.push(from.char);
      }
    }
    this.i++;
    const inSet = (x) => tests.some((test) => test(x));
    return { char: negated ? (x) => !inSet(x) : inSet };
  }

  member() {
    const c = this.cs[this.i++];
    if (c === undefined) throw this.invalid('unterminated character set', this.i - 1);
    if (c === '\\') return this.escape(true);
    if (c === '[' || ['--', '&&', '~~', '||'].includes(c + (this.peek ?? ''))) {
      throw this.unsupported(`${pyRepr(c + (c === '[' ? '' : c))} inside a set`);
    }
    return { char: (x) => x === c, literal: c };
  }
}

/** Thompson's construction: node ids with epsilon moves and character moves ([test, target]). */
class Nfa {
  constructor(pattern) {
    this.pattern = pattern;
    this.epsilon = [];
    this.moves = [];
  }

  node() {
    if (this.epsilon.length >= MAX_NODES) {
      throw new SeqgenError(`pattern ${shownPattern(this.pattern)} needs more than ${MAX_NODES} automaton nodes; use a ` +
        'simpler pattern');
    }
    this.epsilon.push([]);
    this.moves.push([]);
    return this.epsilon.length - 1;
  }

  /** [start, end] nodes of a fragment for `tree`. */
  build(tree) {
    const start = this.node();
    let end = start;
    const link = (fragment) => {
      this.epsilon[end].push(fragment[0]);
      end = fragment[1];
    };
    if (tree.char) {
      end = this.node();
      this.moves[start].push([tree.char, end]);
    } else if (tree.cat) {
      for (const item of tree.cat) link(this.build(item));
    } else if (tree.alt) {
      end = this.node();
      for (const option of tree.alt) {
        const [s, e] = this.build(option);
        this.epsilon[start].push(s);
        this.epsilon[e].push(end);
      }
    } else {
      for (let n = 0; n < tree.min; n++) link(this.build(tree.repeat));
      if (tree.max === null) {
        const [s, e] = this.build(tree.repeat);
        const loop = this.node();
        this.epsilon[end].push(loop);
        this.epsilon[loop].push(s);
        this.epsilon[e].push(loop);
        end = loop;
      } else {
        const exit = this.node();
        for (let n = tree.min; n < tree.max; n++) {
          this.epsilon[end].push(exit);
          link(this.build(tree.repeat));
        }
        this.epsilon[end].push(exit);
        end = exit;
      }
    }
    return [start, end];
  }

  closure(nodes) {
    const seen = new Set(nodes);
    const stack = [...nodes];
    while (stack.length) {
      for (const next of this.epsilon[stack.pop()]) {
        if (!seen.has(next)) {
          seen.add(next);
          stack.push(next);
        }
      }
    }
    return [...seen].sort((a, b) => a - b);
  }
}

/** `pattern` if it is text of at most MAX_PATTERN_CHARS characters that this module can follow, else a SeqgenError. */
export function checkPattern(pattern) {
  if (typeof pattern !== 'string' || [...pattern].length > MAX_PATTERN_CHARS) {
    const type = typeof pattern === 'string' ? 'str' : typeof pattern === 'number' ? (Number.isInteger(pattern) ? 'int' : 'float')
      : typeof pattern === 'boolean' ? 'bool' : Array.isArray(pattern) ? 'list' : typeof pattern === 'object' ? 'dict' : typeof pattern;
    throw new SeqgenError(`pattern must be a regular expression of at most ${MAX_PATTERN_CHARS} characters, got ${type}`);
  }
  new Parser(pattern).parse();
  return pattern;
}

/**
 * The pattern's automaton over tokens (`chars[i]` is token i + 1; token 0, the end, is never a character):
 * { table: Int32Array [states * width] (-1 refused), accepting: Uint8Array [states], initial: 0 }.
 * `maxCells` bounds states times width, with `tooLarge` the error past it.
 */
export function patternTable(pattern, chars, maxCells, tooLarge) {
  const nfa = new Nfa(pattern);
  const [start, end] = nfa.build(new Parser(pattern).parse());
  const width = chars.length + 1;
  const index = new Map();
  const states = [];
  const add = (set) => {
    if (states.length * width >= maxCells) throw tooLarge();
    index.set(set.join(','), states.length);
    states.push(set);
  };
  add(nfa.closure([start]));
  const rows = [];
  for (let at = 0; at < states.length; at++) {
    rows.push(-1);  // the end token is never a character
    for (const char of chars) {
      const targets = states[at].flatMap((node) => nfa.moves[node].filter(([test]) => test(char)).map(([, to]) => to));
      if (!targets.length) {
        rows.push(-1);
        continue;
      }
      const set = nfa.closure(targets);
      if (!index.has(set.join(','))) add(set);
      rows.push(index.get(set.join(',')));
    }
  }
  return { table: Int32Array.from(rows), accepting: Uint8Array.from(states, (set) => (set.includes(end) ? 1 : 0)), initial: 0 };
}
