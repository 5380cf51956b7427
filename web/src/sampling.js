/**
 * The sampler: one pipeline that owns every step shaping the next-character distribution, in the Python
 * runtime's order (runtime/sampling.py): 1. end rule (a running-text model never ends a text), 2. repetition
 * penalty over the last 64 tokens, 3. constraints (allowed, banned, pattern; constrain.js), 4. temperature (0 is
 * greedy: the rest is skipped), 5. top-k, 6. min-p, 7. top-p, 8. the draw. With numpy's PCG64 stream
 * (pcg64.js) drawn in the same blocks, a seed gives Python's text.
 */
import { SeqgenError, byCodePoint, pyRepr } from './errors.js';
import { integer, real, texts } from './checks.js';
import { compileConstraints, refuseImpossible } from './constrain.js';
import { checkPattern } from './pattern.js';
import { PCG64, checkSeed } from './pcg64.js';
import { BOUNDARY } from './vocab.js';

/** Temperatures below this pick the most likely token, as temperature 0 does. */
export const GREEDY_BELOW = 1e-30;
/** How many recent tokens (prompt and generated) the repetition penalty looks at. */
export const PENALTY_WINDOW = 64;
export const MAX_STOPS = 64;
export const MAX_STOP_CHARS = 1_000;
export const MAX_BANNED = 1_000;
export const MAX_BANNED_CHARS = 100;
export const MAX_ALLOWED_CHARS = 100_000;
/** The characters left when a sampler is used without a length limit (Session.sample alone). */
export const NO_LIMIT = 2 ** 31 - 2;
const FLOAT32_MAX = 3.4028234663852886e38;
const BLOCK = 256;

/**
 * Validated sampling options (a frozen object), checked in the Python runtime's order and with its
 * messages: temperature 0 is greedy; topK, topP, minP null are off; repetitionPenalty 1 is off; seed null
 * draws fresh entropy; stop is one text or several. Constraints (docs/constrained.md): `allowed`, the only
 * characters to generate (kept as sorted unique ones); `banned`, words never generated, not even across the
 * prompt boundary; `pattern`, a regular expression the whole generated text fully matches (pattern.js: the
 * subset of Python's syntax it reads the same way; anything else is refused).
 */
export function samplingOptions({ temperature = 1.0, topK = null, topP = null, minP = null, repetitionPenalty = 1.0,
  seed = null, stop = null, allowed = null, banned = null, pattern = null } = {}) {
  real('temperature', temperature, 0);
  if (topK !== null) integer('topK', topK, 1);
  for (const [name, value] of [['topP', topP], ['minP', minP]]) if (value !== null) real(name, value, 0, 1, true);
  real('repetitionPenalty', repetitionPenalty, 0, null, true);
  seed = checkSeed(seed);
  const stops = texts('stop strings', stop, MAX_STOPS, MAX_STOP_CHARS);
  if (allowed !== null) {
    if (typeof allowed !== 'string' || !([...allowed].length > 0 && [...allowed].length <= MAX_ALLOWED_CHARS)) {
      const shown = typeof allowed === 'string' ? pyRepr(allowed) : String(allowed);
      throw new SeqgenError(`allowed must be a non-empty text of at most ${MAX_ALLOWED_CHARS} characters (the ` +
        `characters to allow), got ${shown.slice(0, 80)}`);
    }
    allowed = [...new Set(allowed)].sort(byCodePoint).join('');
  }
  banned = texts('banned words', banned, MAX_BANNED, MAX_BANNED_CHARS);
  if (pattern !== null) checkPattern(pattern);
  return Object.freeze({
    temperature, topK, topP, minP, repetitionPenalty, seed, stop: Object.freeze(stops), allowed,
    banned: Object.freeze(banned), pattern, greedy: temperature < GREEDY_BELOW,
    constrained: allowed !== null || banned.length > 0 || pattern !== null,
  });
}

/**
 * In place: make the tokens in `recent` less likely (llama.cpp's rule), each distinct token once.
 * The boundary is left alone (it starts every sequence); results stay finite; masked tokens stay masked.
 */
export function penalize(logits, recent, penalty) {
  for (const token of new Set(recent)) {
    if (token === BOUNDARY) continue;
    const picked = logits[token];
    if (picked === -Infinity) continue;
    const changed = picked > 0 ? picked / penalty : picked * penalty;
    logits[token] = Math.min(Math.max(changed, -FLOAT32_MAX), FLOAT32_MAX);
  }
}

/** First index in the ascending `sorted` (length `n`) whose value is >= x (right: > x), as numpy's searchsorted. */
function searchSorted(sorted, n, x, right = false) {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (right ? sorted[mid] <= x : sorted[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The pipeline above with its own stream of random numbers: turns a session's next-token logits into token
 * ids. `seed` overrides the options' seed. With constraints, `start` binds it to a session (whose text so
 * far is the prompt) for at most `maxNewChars` new characters; `choose` does that itself on first use.
 */
export class Sampler {
  constructor(options = samplingOptions(), seed = undefined) {
    if (options === null || typeof options !== 'object' || !Object.isFrozen(options) || !('greedy' in options)) {
      throw new SeqgenError('Sampler takes the options of samplingOptions({...})');
    }
    this.options = options;
    this.rng = new PCG64(seed === undefined ? options.seed : seed);
    this.uniforms = new Float64Array(0);
    this.next = 0;
    this.session = null;
    this.automaton = null;  // with constraints, after start: the automaton, the row's state and counts
    this.state = -1;
    this.seen = 0;
    this.begun = 0;
    this.limit = NO_LIMIT;
  }

  /**
   * Bind the sampler to `session`, whose text so far is the prompt, for at most `maxNewChars` new characters
   * (null: no limit). Constraints that no text can meet in that length are refused here, before anything is made.
   */
  async start(session, maxNewChars = null) {
    this.session = session;
    await session.current();  // a fresh session feeds its boundary token first
    if (!this.options.constrained) return;
    const { allowed, banned, pattern, stop } = this.options;
    const { chars } = session.model.vocab;
    this.automaton = compileConstraints(chars, allowed, banned, pattern, stop);
    this.state = this.automaton.start(session.text);
    this.seen = this.begun = session.history.length;
    this.limit = maxNewChars ?? NO_LIMIT;
    refuseImpossible(this.automaton, this.state, this.limit, this.options, chars);
  }

  /** The next token id of `session`, through every stage in order (the session's logits are changed in place). */
  async choose(session) {
    if (session !== this.session) await this.start(session);
    const logits = await session.current();  // worked on in place: the session's next step replaces it
    const { lineItems } = session.model.file;
    session.maskBoundary(logits);  // stage 1: the end rule
    const { repetitionPenalty } = this.options;
    if (repetitionPenalty !== 1) penalize(logits, session.history.slice(-PENALTY_WINDOW), repetitionPenalty);
    if (this.automaton !== null) this.constrain(logits, session.history, lineItems);
    return this.draw(logits);
  }

  /** Stage 3, in place: mask what cannot lead to an accepted text in the characters left. */
  constrain(logits, history, lineItems) {
    const { automaton } = this;
    for (; this.seen < history.length; this.seen++) this.state = automaton.advance(this.state, history[this.seen]);
    if (this.state < 0) return;  // the text has ended; what is drawn now is never used
    const left = this.limit - (this.seen - this.begun);
    const [refused, grows] = automaton.refusedWithin(this.state, left);
    const end = automaton.accepting[this.state] === 1 && (lineItems || !grows);
    if (!(grows || end)) {  // only text fed by hand can lead here
      throw new SeqgenError('no character can continue this text within the constraints and the characters ' +
        'left; the text fed since sampling began does not fit them: start a new Sampler');
    }
    const boundary = logits[BOUNDARY];
    for (let token = 0; token < logits.length; token++) if (refused[token]) logits[token] = -Infinity;
    if (end) logits[BOUNDARY] = lineItems ? boundary : 0.0;  // a running text ends only where it cannot grow
  }

  /** Stages 4-8: the token id for `logits` (Float32Array [vocab], masked tokens -Infinity). */
  draw(logits) {
    const { greedy, topK, topP, minP, temperature } = this.options;
    if (greedy) return argmax(logits);
    let order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
    if (topK !== null) order = order.slice(0, topK);
    const best = logits[order[0]];
    const cumulative = new Float64Array(order.length);
    let total = 0;
    order.forEach((token, i) => {
      let weight = Math.exp((logits[token] - best) / temperature);  // the best candidate weighs 1
      if (minP !== null && weight < minP) weight = 0;
      cumulative[i] = total += weight;
    });
    let kept = order.length;
    if (topP !== null && topP < 1) kept = Math.min(kept, searchSorted(cumulative, kept, topP * total) + 1);
    const pick = searchSorted(cumulative, kept, this.uniform() * cumulative[kept - 1], true);
    return order[Math.min(pick, kept - 1)];
  }

  uniform() {
    if (this.next === this.uniforms.length) {
      this.uniforms = this.rng.random(BLOCK);
      this.next = 0;
    }
    return this.uniforms[this.next++];
  }
}

/** Index of the first largest value, as numpy's argmax. */
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
