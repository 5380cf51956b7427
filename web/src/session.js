/**
 * A Session carries the recurrent state of one sequence through the exported step graph (batch 1):
 * text fed in is processed in one call (chunks of MAX_CHUNK tokens for very long text), and each
 * further character costs one step, as in the Python runtime (runtime/session.py).
 */
import { BOUNDED_NAMES, CELLS } from './cells.js';
import { SeqgenError } from './errors.js';
import { Sampler } from './sampling.js';
import { BOUNDARY } from './vocab.js';

/** Longest run of tokens sent in one call; longer texts go in chunks so memory stays bounded. */
export const MAX_CHUNK = 16_384;

export class Session {
  constructor(model) {
    this.model = model;
    const size = model.file.layers * model.file.hiddenSize;
    this.states = Object.fromEntries(model.stateNames.map((name) => [name, new Float32Array(size)]));
    this.last = null;  // logits after the last token fed (Float32Array [vocab])
    this.history = [];  // every token fed, boundary first
    this.defaultSampler = null;
    this.unbounded = !CELLS[model.file.cell].bounded;  // a state that can overflow is checked
    /** Number of calls into the graph so far (a cost counter, used by tests). */
    this.steps = 0;
  }

  /** Append `text` to the sequence, in one call (or a few, for very long text). */
  async feed(text) {
    await this.feedTokens(this.model.vocab.encode(text));
  }

  /** Append token ids (an array or Int32Array) to the sequence. */
  async feedTokens(ids) {
    for await (const _ of this.chunkLogits(ids)); // eslint-disable-line no-unused-vars
  }

  /**
   * Feed token ids; return an async iterator of the logits (Float32Array [t * vocab]) of each chunk sent.
   * The ids are checked at once; the chunks run as the iterator is consumed. A fresh session first feeds
   * the boundary token, so its first logits predict `ids[0]`.
   */
  chunkLogits(ids) {
    const vocabSize = this.model.vocab.size;
    const tokens = Int32Array.from(ids);
    if (tokens.some((id, i) => id !== ids[i] || id < 0 || id >= vocabSize)) {
      throw new SeqgenError(`token ids must be in 0..${vocabSize - 1}; encode text with the model's vocabulary`);
    }
    if (this.history.length) return this.chunks(tokens);
    const started = new Int32Array(tokens.length + 1);  // zero-filled: the boundary first
    started.set(tokens, 1);
    return this.chunks(started);
  }

  async* chunks(tokens) {
    for (const token of tokens) this.history.push(token);
    const vocabSize = this.model.vocab.size;
    for (let start = 0; start < tokens.length; start += MAX_CHUNK) {
      const chunk = tokens.subarray(start, start + MAX_CHUNK);
      const logits = await this.run(chunk);
      if (this.unbounded) this.checkFinite(logits);
      this.last = logits.slice(logits.length - vocabSize);
      yield logits;
    }
  }

  async run(tokens) {
    const { logits, states } = await this.model.run(tokens, 1, tokens.length, this.states);
    this.states = states;
    this.steps += 1;
    return logits;
  }

  /** Append one token in one call: the per-character path. */
  async step(id) {
    await this.current();
    this.history.push(id);
    this.last = await this.run(Int32Array.of(id));
    if (this.unbounded) this.checkFinite(this.last);
  }

  /**
   * A ReLU RNN's state can grow without bound; once it overflows every choice would be garbage. As in the
   * Python runtime, the test is on the largest logit (+inf or NaN), so both stop at the same token.
   */
  checkFinite(logits) {
    if (logits.some((x) => Number.isNaN(x) || x === Infinity)) {
      throw new SeqgenError(`the model's outputs overflowed to inf/NaN after ${this.history.length} tokens: its ` +
        'ReLU recurrent state grew without bound; use shorter texts, or a model with a bounded cell ' +
        `(${BOUNDED_NAMES.join(', ')})`);
    }
  }

  /** The logits after the last token fed (the session's own array); a fresh session feeds its boundary first. */
  async current() {
    if (this.last === null) await this.feedTokens([]);
    return this.last;
  }

  /** Logits (Float32Array [vocab], a copy) for the next token. */
  async logits() {
    return (await this.current()).slice();
  }

  /** In place: running-text models never end a text, so the boundary is never next. */
  maskBoundary(logits) {
    if (!this.model.file.lineItems) logits[BOUNDARY] = -Infinity;
  }

  /** Next-token probabilities (Float64Array [vocab]). */
  async distribution() {
    const logits = await this.logits();
    this.maskBoundary(logits);
    const top = logits.reduce((a, b) => Math.max(a, b), -Infinity);
    const probs = Float64Array.from(logits, (x) => Math.exp(x - top));
    const total = probs.reduce((a, b) => a + b, 0);
    return probs.map((p) => p / total);
  }

  /** All token ids fed so far (Int32Array), the starting boundary included. */
  get tokens() {
    return Int32Array.from(this.history);
  }

  /** The text so far (boundary tokens left out). */
  get text() {
    return this.model.vocab.decode(this.history);
  }

  /**
   * Draw the next token with `sampler` (default: one unseeded sampler per session) through its whole
   * pipeline (end rule, repetition penalty, constraints, temperature and cuts, draw), feed it, return its id.
   */
  async sample(sampler = null) {
    if (sampler === null) sampler = this.defaultSampler ??= new Sampler();
    const id = await sampler.choose(this);
    await this.step(id);
    return id;
  }

  /** Plain typed arrays (structured-cloneable: postMessage, IndexedDB) that `loadState` continues from. */
  async saveState() {
    const saved = { logits: (await this.current()).slice(), tokens: this.tokens };
    for (const [name, value] of Object.entries(this.states)) saved[name] = value.slice();
    return saved;
  }

  /** Continue from arrays made by `saveState` on the same model. */
  loadState(saved) {
    const { layers, hiddenSize } = this.model.file;
    const vocabSize = this.model.vocab.size;
    const expected = Object.fromEntries(this.model.stateNames.map((name) => [name, layers * hiddenSize]));
    expected.logits = vocabSize;
    for (const [name, length] of Object.entries(expected)) {
      const value = saved?.[name];
      if (!(value instanceof Float32Array) || value.length !== length) {
        throw new SeqgenError(`saved state has no '${name}' of ${length} float32 values; save it from a session ` +
          'of this model');
      }
    }
    const tokens = saved.tokens;
    if (!(tokens instanceof Int32Array) || tokens.length === 0 || tokens.some((t) => t < 0 || t >= vocabSize)) {
      throw new SeqgenError("saved state's tokens do not fit this model; save it from a session of this model");
    }
    for (const name of this.model.stateNames) this.states[name] = saved[name].slice();
    this.last = saved.logits.slice();
    this.history = Array.from(tokens);
  }
}
