/** Model: a loaded seqgen file with predict, generate, stream, score and stateful sessions. */
import * as ort from 'onnxruntime-web';
import { stateNames } from './cells.js';
import { SeqgenError } from './errors.js';
import { streamText } from './generate.js';
import { readModelFile } from './modelfile.js';
import { MAX_CHUNK, Session } from './session.js';
import { IGNORE, frameItems } from './vocab.js';

/** onnxruntime-web's tensor types as ONNX (and the Python runtime's messages) name them. */
const ONNX_TYPES = { int64: 'tensor(int64)', float32: 'tensor(float)' };
/** Line items scored together in one call. */
export const SCORE_BATCH = 256;
/** Python's str.splitlines separators, so line items split as in the Python runtime. */
const LINE_BREAKS = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;
/** Largest model file `load` fetches unless told otherwise (the largest shipped model is 13 MB). */
export const MAX_MODEL_BYTES = 2 ** 30;

/** How well a model predicts a text: per predicted token, its log-probability (nats) and whether it was the top choice. */
export class Score {
  constructor(logprobs, correct) {
    this.logprobs = logprobs;
    this.correct = correct;
  }

  get tokens() {
    return this.logprobs.length;
  }

  /** Mean negative log-likelihood in nats per token. */
  get loss() {
    return -this.logprobs.reduce((a, b) => a + b, 0) / this.tokens;
  }

  /** Fraction of tokens that were the most likely prediction. */
  get accuracy() {
    return this.correct.reduce((a, b) => a + b, 0) / this.tokens;
  }

  get bitsPerChar() {
    return this.loss / Math.LN2;
  }

  get perplexity() {
    return Math.exp(this.loss);
  }
}

/** A model file's bytes from a URL (string or URL) or from bytes (ArrayBuffer or a typed array). */
async function modelBytes(source, maxBytes) {
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  if (typeof source !== 'string' && !(source instanceof URL)) {
    throw new SeqgenError('load takes a URL or the file\'s bytes (ArrayBuffer or Uint8Array)');
  }
  let response;
  try {
    response = await fetch(source);
  } catch (error) {
    throw new SeqgenError(`cannot fetch model ${source}: ${error.message}; check the URL and the network`);
  }
  if (!response.ok) throw new SeqgenError(`cannot fetch model ${source}: HTTP ${response.status}; check the URL`);
  const declared = Number(response.headers.get('content-length') ?? 0);
  if (declared > maxBytes) {
    throw new SeqgenError(`model ${source} is ${declared} bytes, over the limit of ${maxBytes}; pass a larger maxBytes`);
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (bytes.length > maxBytes) {
    throw new SeqgenError(`model ${source} is ${bytes.length} bytes, over the limit of ${maxBytes}; pass a larger maxBytes`);
  }
  return bytes;
}

/**
 * Load a seqgen model from a URL or from the file's bytes: read and check its metadata and checksum,
 * then create the onnxruntime-web session (WebAssembly; one thread unless ort.env.wasm.numThreads is set).
 * Options: verify (default true: check the checksum), name (how errors name bytes), maxBytes.
 */
export async function load(source, { verify = true, name = null, maxBytes = MAX_MODEL_BYTES } = {}) {
  const bytes = await modelBytes(source, maxBytes);
  const label = name ?? (typeof source === 'string' || source instanceof URL ? String(source) : 'model bytes');
  const file = await readModelFile(bytes, label, { verify });
  if (!ort.env.wasm.numThreads) ort.env.wasm.numThreads = 1;  // as the Python runtime: fastest for one step
  let graph;
  try {
    graph = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  } catch (error) {
    const line = String(error?.message ?? error).trim().split('\n')[0];
    throw new SeqgenError(`${label}: onnxruntime cannot load the graph (${line}); re-export the model`);
  }
  return new Model(file, graph);
}

/** A seqgen model ready to run in the browser. Calls into the graph run one at a time, in order. */
export class Model {
  constructor(file, graph, vocab = file.vocab) {
    this.file = file;
    this.graph = graph;
    this.vocab = vocab;
    this.stateNames = stateNames(file.cell);
    this.queue = Promise.resolve();
    this.checkSignature();
  }

  /** The graph must be a seqgen step graph whose logits fit the vocabulary (as the Python runtime checks). */
  checkSignature() {
    const byName = (list) => Object.fromEntries(list.map((value) => [value.name, value]));
    const states = (suffix) => this.stateNames.map((name) => [name + suffix, 'float32', 3]);
    const wanted = [['input', byName(this.graph.inputMetadata), [['tokens', 'int64', 2], ...states('')]],
      ['output', byName(this.graph.outputMetadata), [['logits', 'float32', 3], ...states('_out')]]];
    for (const [kind, have, values] of wanted) {
      for (const [name, type, rank] of values) {
        const value = have[name];
        if (!value?.isTensor || value.type !== type || value.shape.length !== rank) {
          throw new SeqgenError(`${this.file.source}: graph lacks ${kind} '${name}' (${ONNX_TYPES[type]}, rank ${rank}); ` +
            'it is not a seqgen step graph, re-export it');
        }
      }
    }
    const width = byName(this.graph.outputMetadata).logits.shape[2];
    if (typeof width === 'number') this.checkWidth(width);
  }

  checkWidth(width) {
    if (width !== this.vocab.size) {
      throw new SeqgenError(`${this.file.source}: logits have width ${width} but the vocabulary has ${this.vocab.size} ` +
        'tokens; the file was edited or damaged, re-export it');
    }
  }

  /** The file's metadata (format version, cell, sizes, vocabulary, training facts). */
  get info() {
    return this.file.info;
  }

  /** A fresh stateful Session: feed text, read or sample the next character, save/load state. */
  session() {
    return new Session(this);
  }

  /** This model with another policy for characters outside the vocabulary (shares the graph). */
  withUnknown(unknown, replacement = null) {
    return new Model(this.file, this.graph, this.vocab.withPolicy(unknown, replacement));
  }

  /**
   * One call of the step graph: token ids (Int32Array [batch * time]) and states ({name: Float32Array})
   * in; { logits: Float32Array [batch * time * vocab], states } out.
   */
  async run(tokens, batch, time, states) {
    const { layers, hiddenSize } = this.file;
    const feeds = { tokens: new ort.Tensor('int64', BigInt64Array.from(tokens, BigInt), [batch, time]) };
    for (const name of this.stateNames) feeds[name] = new ort.Tensor('float32', states[name], [layers, batch, hiddenSize]);
    const result = this.queue.then(() => this.graph.run(feeds));
    this.queue = result.catch(() => {});
    const out = await result;
    this.checkWidth(out.logits.dims[2]);  // where the graph leaves it dynamic
    return {
      logits: out.logits.data,
      states: Object.fromEntries(this.stateNames.map((name) => [name, out[`${name}_out`].data])),
    };
  }

  /** The k most likely next characters after `text`: [[char, probability], ...], most likely first. */
  async predict(text, k = 5) {
    if (!Number.isSafeInteger(k) || k < 1) throw new SeqgenError(`k must be an integer >= 1, got ${k}`);
    const session = this.session();
    await session.feed(text);
    const probs = await session.distribution();
    const count = Math.min(k, this.file.lineItems ? this.vocab.size : this.vocab.size - 1);
    const top = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b).slice(0, count);
    return top.map((t) => [this.vocab.char(t), probs[t]]);
  }

  /**
   * Yield new text after `prompt` as it is made (stop strings are never emitted). Options:
   * maxNewChars (200), temperature (1; 0 is greedy), topK, topP, minP, repetitionPenalty (1), stop, seed.
   */
  stream(prompt = '', options = {}) {
    return streamText(this, prompt, options);
  }

  /** New text after `prompt` (the prompt itself is not included). Options as in `stream`. */
  async generate(prompt = '', options = {}) {
    let text = '';
    for await (const piece of this.stream(prompt, options)) text += piece;
    return text;
  }

  /**
   * Log-probability of each character of `text` given the ones before it. Running-text models score the
   * whole text with carried state; line-item models score each non-empty line as an item, its end included.
   */
  async score(text) {
    if (this.file.lineItems) return this.scoreItems(text.split(LINE_BREAKS).filter((line) => line));
    const ids = this.vocab.encode(text);
    if (ids.length === 0) {
      throw new SeqgenError('nothing to score: the text is empty (after the unknown-character policy)');
    }
    const parts = [];
    let done = 0;
    for await (const logits of this.session().chunkLogits(ids.subarray(0, -1))) {
      const width = logits.length / this.vocab.size;
      parts.push(scoreRows(logits, ids.subarray(done, done + width), this.vocab.size));
      done += width;
    }
    return joined(parts);
  }

  async scoreItems(items) {
    if (!items.length) throw new SeqgenError('nothing to score: the text has no non-empty lines');
    const encoded = items.map((item) => this.vocab.encode(item));
    const vocabSize = this.vocab.size;
    const { layers, hiddenSize } = this.file;
    const parts = [];
    for (let start = 0; start < encoded.length; start += SCORE_BATCH) {
      const { inputs, targets, width } = frameItems(encoded.slice(start, start + SCORE_BATCH));
      const batch = targets.length / width;
      let states = Object.fromEntries(this.stateNames.map((n) => [n, new Float32Array(layers * batch * hiddenSize)]));
      for (let from = 0; from < width; from += MAX_CHUNK) {
        const time = Math.min(MAX_CHUNK, width - from);
        const chunk = new Int32Array(batch * time);
        for (let row = 0; row < batch; row++) chunk.set(inputs.subarray(row * width + from, row * width + from + time), row * time);
        let logits;
        ({ logits, states } = await this.run(chunk, batch, time, states));
        const rows = [];
        const wanted = [];
        for (let row = 0; row < batch; row++) {
          for (let t = 0; t < time; t++) {
            const target = targets[row * width + from + t];
            if (target !== IGNORE) {
              rows.push(row * time + t);
              wanted.push(target);
            }
          }
        }
        const picked = new Float32Array(rows.length * vocabSize);
        rows.forEach((r, i) => picked.set(logits.subarray(r * vocabSize, (r + 1) * vocabSize), i * vocabSize));
        parts.push(scoreRows(picked, wanted, vocabSize));
      }
    }
    return joined(parts);
  }
}

/** log softmax(logits)[target], and whether the target was the argmax, for each row of [n * vocab] logits. */
function scoreRows(logits, targets, vocabSize) {
  const logprobs = new Float64Array(targets.length);
  const correct = new Uint8Array(targets.length);
  for (let i = 0; i < targets.length; i++) {
    const row = logits.subarray(i * vocabSize, (i + 1) * vocabSize);
    const top = row.reduce((a, b) => Math.max(a, b), -Infinity);
    const norm = Math.log(row.reduce((sum, x) => sum + Math.exp(x - top), 0)) + top;
    logprobs[i] = row[targets[i]] - norm;
    correct[i] = row[targets[i]] >= top ? 1 : 0;
  }
  return [logprobs, correct];
}

function joined(parts) {
  const concat = (Type, index) => {
    const out = new Type(parts.reduce((n, p) => n + p[index].length, 0));
    let offset = 0;
    for (const part of parts) {
      out.set(part[index], offset);
      offset += part[index].length;
    }
    return out;
  };
  return new Score(concat(Float64Array, 0), concat(Uint8Array, 1));
}
