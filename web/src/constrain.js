/**
 * Constraints on generated text (allowed characters, banned words, a pattern; runtime/constrain.py), compiled once per
 * vocabulary into one deterministic automaton over its tokens, so each sampling step is a table lookup.
 *
 * A token is offered only if the generated text so far plus it can still be extended to an accepted text
 * within the characters left. An accepted text uses only `allowed` characters, contains no `banned` word
 * (counting the prompt's tail, so none appears across the prompt boundary either) and fully matches `pattern`. Stop strings end a text
 * where the text before them is accepted; their own characters are not part of it.
 */
import { SeqgenError, shownPattern } from './errors.js';
import { patternTable } from './pattern.js';
import { BOUNDARY } from './vocab.js';

/** Most automaton states times vocabulary size one set of constraints may need. */
export const MAX_CELLS = 4_000_000;
/** Distance of a state from which no accepted text can be reached. */
export const NEVER = 2 ** 31 - 1;

/** Text as an array of characters (code points), as Python indexes it. */
const charsOf = (text) => [...text];

/**
 * Matching a few words at once: a state is the longest suffix of the text that starts a word (Aho-Corasick's
 * states, found by looking suffixes up, since words are short).
 */
class Trie {
  constructor(words) {
    this.words = new Set(words);
    this.index = new Set(words.flatMap((w) => charsOf(w).map((_, i) => charsOf(w).slice(0, i).join(''))));
    this.prefixes = [...this.index].sort((a, b) => charsOf(a).length - charsOf(b).length);
    this.longest = Math.max(...words.map((w) => charsOf(w).length));
  }

  /** The longest suffix of `chars` (an array) in `set`, as text; null if none. */
  static longestSuffix(chars, set) {
    for (let i = 0; i <= chars.length; i++) {
      const suffix = chars.slice(i).join('');
      if (set.has(suffix)) return suffix;
    }
    return null;
  }

  /** [the state after `char`, the longest word the text now ends with (null if none)]. */
  step(prefix, char) {
    const text = [...charsOf(prefix), char];
    const ended = Trie.longestSuffix(text, this.words);
    return [Trie.longestSuffix(text, this.index), ended];
  }

  /** The state after `text`, taking no notice of words wholly inside it. */
  stateAfter(text) {
    const chars = charsOf(text);
    return Trie.longestSuffix(this.longest > 1 ? chars.slice(-(this.longest - 1)) : [], this.index);
  }
}

/**
 * A deterministic automaton over token ids: `next` (Int32Array [states * width]; -1 refused, the end token's
 * column always -1) and `accepting` (Uint8Array [states]). `steps` is what sampling reads: how many characters,
 * this token included, the shortest accepted text through it needs (NEVER if none).
 */
class Automaton {
  constructor(next, accepting, width, starts, startOf) {
    Object.assign(this, { next, accepting, width, starts, startOf });
    const states = accepting.length;
    this.distance = distances(next, accepting, width);
    this.steps = new Int32Array(states * width);
    this.refused = new Uint8Array(states * width);
    this.roomy = new Int32Array(states);
    this.grows = new Uint8Array(states);
    for (let i = 0; i < next.length; i++) {
      const to = next[i];
      this.steps[i] = to >= 0 && this.distance[to] < NEVER ? this.distance[to] + 1 : NEVER;
      this.refused[i] = this.steps[i] === NEVER ? 1 : 0;
      const state = Math.floor(i / width);
      if (!this.refused[i]) {
        this.roomy[state] = Math.max(this.roomy[state], this.steps[i]);
        this.grows[state] = 1;
      }
    }
  }

  /** [the tokens (Uint8Array [vocab]) after which no accepted text fits in `left` characters, whether any is not]. */
  refusedWithin(state, left) {
    const row = this.refused.subarray(state * this.width, (state + 1) * this.width);
    if (left >= this.roomy[state]) return [row, this.grows[state] === 1];
    const steps = this.steps.subarray(state * this.width, (state + 1) * this.width);
    const refused = steps.map((n) => (n > left ? 1 : 0));
    return [refused, refused.some((r) => !r)];
  }

  /** The state (-1 once ended) after one more token; the end token ends the text. */
  advance(state, token) {
    if (state < 0 || token === BOUNDARY) return -1;
    const following = this.next[state * this.width + token];
    if (following < 0) throw new SeqgenError('text fed after sampling began breaks the constraints; start a new Sampler for it');
    return following;
  }

  /** The state of a text whose text before generation is `text` (only its tail matters). */
  start(text) {
    return this.starts.get(this.startOf(text));
  }
}

/** Fewest characters from each state to an accepting one (NEVER if none): a breadth-first search backwards from
 * the accepting states, each transition looked at once (runtime/constrain.py's _distances). */
function distances(next, accepting, width) {
  const states = accepting.length;
  const before = Array.from({ length: states }, () => []);  // each state's predecessors, one per transition
  for (let state = 0; state < states; state++) {
    for (let t = 0; t < width; t++) {
      const to = next[state * width + t];
      if (to >= 0) before[to].push(state);
    }
  }
  const distance = Int32Array.from(accepting, (a) => (a ? 0 : NEVER));
  let frontier = [];
  accepting.forEach((a, state) => { if (a) frontier.push(state); });
  for (let length = 1; frontier.length; length++) {
    const reached = [];
    for (const state of frontier) {
      for (const from of before[state]) {
        if (distance[from] === NEVER) {
          distance[from] = length;
          reached.push(from);
        }
      }
    }
    frontier = reached;
  }
  return distance;
}

const tooLarge = (width) => new SeqgenError(`the constraints need more than ${Math.floor(MAX_CELLS / width)} automaton ` +
  'states for this vocabulary; use a simpler pattern, or fewer banned words or stop strings');

/** Every state reachable from `begin` (breadth first; `key` names a state) and the table of their transitions. */
function explore(begin, moves, width, key) {
  const index = new Map();
  const order = [];
  const add = (state) => {
    index.set(key(state), order.length);
    order.push(state);
  };
  for (const state of begin) if (!index.has(key(state))) add(state);
  const rows = [];
  for (let at = 0; at < order.length; at++) {
    for (const target of moves(order[at])) {
      if (target !== null && !index.has(key(target))) {
        if (order.length * width >= MAX_CELLS) throw tooLarge(width);
        add(target);
      }
      rows.push(target === null ? -1 : index.get(key(target)));
    }
  }
  return [order, Int32Array.from(rows)];
}

const pairKey = ([at, text]) => `${at}:${text}`;
const cache = new Map();
const CACHE_SIZE = 16;

/**
 * The automaton of these constraints over a vocabulary (`chars[i]` is token i + 1); cached (the same
 * constraints come again and again).
 */
export function compileConstraints(chars, allowed, banned, pattern, stop) {
  const cacheKey = JSON.stringify([chars, allowed, banned, pattern, stop]);
  if (!cache.has(cacheKey)) {
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value);
    cache.set(cacheKey, compiled(chars, allowed, banned, pattern, stop));
  }
  return cache.get(cacheKey);
}

function compiled(chars, allowed, banned, pattern, stop) {
  const width = chars.length + 1;
  const usable = [false, ...chars.map((c) => allowed === null || allowed.includes(c))];
  const vocabulary = new Set(chars);
  const words = banned.filter((w) => charsOf(w).every((c) => vocabulary.has(c)));  // others cannot appear
  const trie = words.length ? new Trie(words) : null;
  const { table, accepting, initial } = pattern === null
    ? { table: new Int32Array(width), accepting: Uint8Array.of(1), initial: 0 }
    : patternTable(pattern, chars, MAX_CELLS, () => tooLarge(width));
  const moves = ([at, prefix]) => [null, ...chars.map((char, i) => {
    const following = usable[i + 1] ? table[at * width + i + 1] : -1;
    if (following < 0) return null;
    if (trie === null) return [following, ''];
    const [after, ended] = trie.step(prefix, char);
    return ended === null ? [following, after] : null;
  })];
  const prefixes = trie === null ? [''] : trie.prefixes;
  const [innerStates, innerNext] = explore(prefixes.map((p) => [initial, p]), moves, width, pairKey);
  const innerAccepting = Uint8Array.from(innerStates, ([at]) => accepting[at]);
  const starts = new Map(prefixes.map((p, i) => [p, i]));
  const startOf = (text) => (trie === null ? '' : trie.stateAfter(text));
  if (!stop.length) return new Automaton(innerNext, innerAccepting, width, starts, startOf);
  return withStops(innerNext, innerAccepting, starts, startOf, chars, new Trie(stop));
}

/**
 * The automaton that also lets a stop string end the text where the text before it is accepted. A state is
 * [the inner state where the current partial stop string began, that partial stop string]; the stop's own
 * characters need not satisfy the inner automaton. STOPPED is the accepting state after a stop.
 */
function withStops(innerNext, innerAccepting, starts, startOf, chars, stops) {
  const width = chars.length + 1;
  const stopped = [-1, ''];
  const token = new Map(chars.map((c, i) => [c, i + 1]));
  const isStopped = ([back, partial]) => back === -1 && partial === '';
  const run = (state, text) => {
    for (const char of text) {
      if (state < 0) return -1;
      state = innerNext[state * width + token.get(char)];
    }
    return state;
  };
  const moves = (state) => {
    if (isStopped(state)) return new Array(width).fill(null);
    const [back, partial] = state;
    return [null, ...chars.map((char) => {
      const [after, ended] = stops.step(partial, char);
      const text = [...charsOf(partial), char];
      if (ended !== null) {  // a stop string ends here: allowed if the text before it is accepted
        const before = run(back, text.slice(0, text.length - charsOf(ended).length));
        return before >= 0 && innerAccepting[before] ? stopped : null;
      }
      const begin = run(back, text.slice(0, text.length - charsOf(after).length));  // where `after` begins
      return begin >= 0 ? [begin, after] : null;
    })];
  };
  const begin = [...starts.values()].map((state) => [state, '']);
  const [states, next] = explore([...begin, stopped], moves, width, pairKey);
  const accepting = Uint8Array.from(states, (s) => {
    if (isStopped(s)) return 1;
    const at = run(s[0], s[1]);
    return at >= 0 && innerAccepting[at] ? 1 : 0;
  });
  const index = new Map(states.map((s, i) => [pairKey(s), i]));
  const outer = new Map([...starts].map(([key, state]) => [key, index.get(pairKey([state, '']))]));
  return new Automaton(next, accepting, width, outer, startOf);
}

/**
 * Before generating: a SeqgenError with the reason if no accepted text fits in `limit` characters from
 * `state`, or if every accepted text would be empty.
 */
export function refuseImpossible(automaton, state, limit, options, chars) {
  if (options.allowed !== null && ![...options.allowed].some((c) => chars.includes(c))) {
    throw new SeqgenError("none of the allowed characters is in the model's vocabulary (see model.info.vocabulary)");
  }
  const need = automaton.distance[state];
  if (need >= NEVER) {
    const madeOf = "the model's characters" + (options.allowed !== null ? ' that are allowed' : '');
    const avoiding = options.banned.length ? ', without a banned word' : '';
    const stops = options.stop.length ? ', and that no stop string cuts every match short' : '';
    throw new SeqgenError(`no text made of ${madeOf}${avoiding} can fully match the pattern ` +
      `${shownPattern(options.pattern)}; check it against the model's vocabulary ` +
      `(model.info.vocabulary)${stops}`);
  }
  if (need > limit) {
    throw new SeqgenError(`the shortest text the constraints accept has ${need} characters, but maxNewChars is ` +
      `${limit}; raise maxNewChars`);
  }
  const row = automaton.steps.subarray(state * automaton.width, (state + 1) * automaton.width);
  if (limit > 0 && !row.some((n) => n <= limit)) {
    throw new SeqgenError('the constraints allow no character here, so every text would be empty; allow more ' +
      'characters, ban fewer words or loosen the pattern');
  }
}
