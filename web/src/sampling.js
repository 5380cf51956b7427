/**
 * Choosing the next character from logits, in the Python runtime's order (runtime/sampling.py):
 * repetition penalty, then temperature, then top-k, min-p and top-p on the tempered distribution.
 * With numpy's PCG64 stream (pcg64.js) drawn in the same blocks, a seed gives Python's text.
 */
import { SeqgenError } from './errors.js';
import { PCG64 } from './pcg64.js';
import { BOUNDARY } from './vocab.js';

/** Temperatures below this pick the most likely token, as temperature 0 does. */
export const GREEDY_BELOW = 1e-30;
/** How many recent tokens (prompt and generated) the repetition penalty looks at. */
export const PENALTY_WINDOW = 64;
const FLOAT32_MAX = 3.4028234663852886e38;
const BLOCK = 256;

const isNumber = (value) => typeof value === 'number' && !Number.isNaN(value);

/** Validated sampling options (a frozen object); temperature 0 is greedy. */
export function samplingOptions({ temperature = 1.0, topK = null, topP = null, minP = null,
  repetitionPenalty = 1.0 } = {}) {
  if (!isNumber(temperature) || temperature < 0 || !Number.isFinite(temperature)) {
    throw new SeqgenError(`temperature must be a finite number >= 0 (0 is greedy), got ${temperature}`);
  }
  if (topK !== null && (!Number.isInteger(topK) || topK < 1)) {
    throw new SeqgenError(`topK must be an integer >= 1 (values above the vocabulary size keep all), got ${topK}`);
  }
  for (const [name, value] of [['topP', topP], ['minP', minP]]) {
    if (value !== null && !(isNumber(value) && value > 0 && value <= 1)) {
      throw new SeqgenError(`${name} must be in (0, 1], got ${value}`);
    }
  }
  if (!isNumber(repetitionPenalty) || repetitionPenalty <= 0 || !Number.isFinite(repetitionPenalty)) {
    throw new SeqgenError(`repetitionPenalty must be a finite number > 0 (1 is off), got ${repetitionPenalty}`);
  }
  return Object.freeze({ temperature, topK, topP, minP, repetitionPenalty, greedy: temperature < GREEDY_BELOW });
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

/** Sampling options with their stream of random numbers: turns next-token logits into token ids. */
export class Sampler {
  constructor(options = samplingOptions(), seed = null) {
    this.options = options;
    this.rng = new PCG64(seed);
    this.uniforms = new Float64Array(0);
    this.next = 0;
  }

  /** The token id for `logits` (Float32Array [vocab], masked tokens -Infinity). */
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
