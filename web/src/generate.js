/** Text generation: a prompt in, new characters out, one step per character (runtime/generate.py). */
import { SeqgenError } from './errors.js';
import { Sampler, samplingOptions } from './sampling.js';
import { BOUNDARY } from './vocab.js';

/** The options `stream` and `generate` take, with their defaults. */
export const GENERATE_DEFAULTS = Object.freeze({
  maxNewChars: 200, temperature: 1.0, topK: null, topP: null, minP: null, repetitionPenalty: 1.0, stop: null,
  seed: null, allowed: null, banned: null, pattern: null,
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

/** Most characters one call generates: a session keeps every token (Python's seqgen.checks.MAX_NEW_CHARS). */
export const MAX_NEW_CHARS = 10_000_000;

/** The number of characters to generate, checked before any prompt is processed. */
export function checkLength(maxNewChars) {
  if (!Number.isSafeInteger(maxNewChars) || maxNewChars < 0 || maxNewChars > MAX_NEW_CHARS) {
    throw new SeqgenError(`maxNewChars must be an integer in [0, ${MAX_NEW_CHARS}], got ${maxNewChars}`);
  }
  return maxNewChars;
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

/**
 * Yield new text after `prompt` as it is made (stop strings are never emitted). Options are checked, the
 * prompt fed, and impossible constraints refused, before any text is made (the Python runtime's order).
 */
export async function* streamText(model, prompt, options) {
  const { maxNewChars, ...sampling } = generateOptions(options);
  const sampler = new Sampler(samplingOptions(sampling));
  checkLength(maxNewChars);
  const session = model.session();
  await session.feed(prompt);
  await sampler.start(session, maxNewChars);
  const matcher = new StopMatcher(sampler.options.stop);
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
