/** Text generation: a prompt in, new characters out, one step per character (runtime/generate.py). */
import { SeqgenError } from './errors.js';
import { Sampler, samplingOptions } from './sampling.js';
import { checkSeed } from './pcg64.js';
import { BOUNDARY } from './vocab.js';

/** The options `stream` and `generate` take, with their defaults. */
export const GENERATE_DEFAULTS = Object.freeze({
  maxNewChars: 200, temperature: 1.0, topK: null, topP: null, minP: null, repetitionPenalty: 1.0, stop: null,
  seed: null,
});

/** Options with defaults filled in; unknown names (typos) are refused rather than ignored. */
export function generateOptions(options = {}) {
  if (options === null || typeof options !== 'object') {
    throw new SeqgenError('options must be an object such as {maxNewChars: 100, temperature: 0.8}');
  }
  const unknown = Object.keys(options).filter((key) => !(key in GENERATE_DEFAULTS));
  if (unknown.length) {
    throw new SeqgenError(`unknown option ${unknown[0]}; use ${Object.keys(GENERATE_DEFAULTS).join(', ')}`);
  }
  const merged = { ...GENERATE_DEFAULTS };
  for (const [key, value] of Object.entries(options)) if (value !== undefined) merged[key] = value;
  return merged;
}

/** The number of characters to generate, checked before any prompt is processed. */
export function checkLength(maxNewChars) {
  if (!Number.isSafeInteger(maxNewChars) || maxNewChars < 0) {
    throw new SeqgenError(`maxNewChars must be an integer >= 0, got ${maxNewChars}`);
  }
  return maxNewChars;
}

/** The `stop` option as an array of non-empty strings. */
export function stopStrings(stop) {
  if (stop === null) return [];
  const stops = typeof stop === 'string' ? [stop] : Array.isArray(stop) ? stop : null;
  if (stops === null || stops.some((s) => typeof s !== 'string' || s === '')) {
    throw new SeqgenError('stop strings must be non-empty text; remove the empty one');
  }
  return stops;
}

/** Holds back text that may be the start of a stop string, so a stop string is never emitted. */
export class StopMatcher {
  constructor(stops) {
    this.stops = stops;
    this.pending = '';
  }

  /** Add generated text; return [text safe to emit, whether a stop string was reached]. */
  push(text) {
    this.pending += text;
    const hits = this.stops.map((s) => this.pending.indexOf(s)).filter((i) => i >= 0);
    if (hits.length) {
      const emit = this.pending.slice(0, Math.min(...hits));
      this.pending = '';
      return [emit, true];
    }
    let hold = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.pending.length); n > hold; n--) {
        if (this.pending.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    const cut = this.pending.length - hold;
    const emit = this.pending.slice(0, cut);
    this.pending = this.pending.slice(cut);
    return [emit, false];
  }

  /** The held-back text, at the end of generation. */
  flush() {
    const emit = this.pending;
    this.pending = '';
    return emit;
  }
}

/** Yield new text after `prompt` as it is made (stop strings are never emitted). */
export async function* streamText(model, prompt, options) {
  const { maxNewChars, temperature, topK, topP, minP, repetitionPenalty, stop, seed } = generateOptions(options);
  const sampling = samplingOptions({ temperature, topK, topP, minP, repetitionPenalty });
  const stops = stopStrings(stop);
  checkLength(maxNewChars);
  const sampler = new Sampler(sampling, checkSeed(seed));
  const session = model.session();
  await session.feed(prompt);
  const matcher = new StopMatcher(stops);
  for (let i = 0; i < maxNewChars; i++) {
    const token = await session.sample(sampler);
    if (token === BOUNDARY) break;
    const [text, hit] = matcher.push(model.vocab.char(token));
    if (text) yield text;
    if (hit) break;
  }
  const rest = matcher.flush();
  if (rest) yield rest;
}
