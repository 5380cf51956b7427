/**
 * The seqgen model file (docs/model-format.md) read from its bytes: metadata, vocabulary and the checks
 * the Python runtime makes (runtime/modelfile.py) before onnxruntime sees the graph.
 */
import { SeqgenError, byCodePoint, pyRepr } from './errors.js';
import { CELL_NAMES } from './cells.js';
import { checkAgainstGraph, graphFacts } from './graph.js';
import { BYTES, WireError, fields, records } from './wire.js';
import { Vocabulary } from './vocab.js';

/** The format's major version: the newest major this package reads (any minor of it), as the Python runtime. */
export const FORMAT_VERSION = 1;
/** The oldest major version this package still reads. */
export const OLDEST_FORMAT_VERSION = 1;
export const PREFIX = 'seqgen.';
const REQUIRED_KEYS = ['format_version', 'vocabulary', 'cell', 'layers', 'hidden_size', 'embedding_size', 'vocab_size'];
/** The key of the checksum that covers the whole file, its seqgen metadata included. */
export const CHECKSUM_KEY = 'file_crc32';
/** Metadata that is text even when it reads as a number (a hex digest of digits only, a file named 2024). */
const TEXT_KEYS = new Set([CHECKSUM_KEY, 'format_version', 'graph_crc32', 'graph_sha256', 'corpus', 'corpus_sha256',
  'created', 'seqgen_version']);
const MAX_LAYERS = 64;
const MAX_HIDDEN = 65_536;
const MAX_VOCAB = 1_114_113;
/** Deepest nesting of a JSON metadata value (the training configuration needs 3). */
export const MAX_JSON_DEPTH = 32;
const FLAGS = { true: true, false: false };
const QUANTIZATIONS = { none: false, int8: true };

/** Field numbers of onnx.proto that the checks below read. */
const FIELD = Object.freeze({ modelGraph: 7, modelMetadata: 14 });

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** zlib's crc32(bytes, crc): the CRC-32 of `bytes` continued from `crc` (an unsigned 32-bit number). */
export function crc32Update(bytes, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** zlib's CRC-32 of some bytes, as 8 lowercase hex digits. */
export function crc32(bytes) {
  return hex(crc32Update(bytes));
}

const hex = (crc) => crc.toString(16).padStart(8, '0');

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/**
 * Metadata (a Map, in file order), the graph's bytes and (with `checksum`) the file's `file_crc32`
 * (docs/model-format.md: every top-level field but the metadata, then the seqgen metadata in order of key,
 * each text as its UTF-8 length in 4 little-endian bytes and its bytes), in one pass. Throws WireError for
 * bytes that are not protobuf, SeqgenError for a seqgen key given twice.
 */
function scan(data, checksum) {
  const metadata = new Map();
  let graph = null;
  let crc = 0;
  for (const [number, kind, value, raw] of records(data)) {
    if (number === FIELD.modelMetadata && kind === BYTES) {
      const entry = {};
      try {
        for (const [n, k, v] of fields(value)) if (k === BYTES) entry[n] = utf8.decode(v);
      } catch (error) {
        if (error instanceof WireError) throw error;
        throw new WireError('metadata is not UTF-8');
      }
      const key = entry[1] ?? '';
      if (metadata.has(key) && key.startsWith(PREFIX)) {
        throw new SeqgenError(`metadata key ${pyRepr(key)} appears twice; the file was edited or damaged, re-export it`);
      }
      metadata.set(key, entry[2] ?? '');
      continue;
    }
    if (number === FIELD.modelGraph && kind === BYTES) graph = value;
    if (checksum) crc = crc32Update(raw, crc);
  }
  if (checksum) {
    const keys = [...metadata.keys()].filter((k) => k.startsWith(PREFIX) && k !== PREFIX + CHECKSUM_KEY);
    for (const key of keys.sort(byCodePoint)) {
      for (const text of [key, metadata.get(key)]) {
        const bytes = encoder.encode(text);
        const length = new Uint8Array(4);
        new DataView(length.buffer).setUint32(0, bytes.length, true);
        crc = crc32Update(bytes, crc32Update(length, crc));
      }
    }
  }
  return { metadata, graph, checksum: checksum ? hex(crc) : null };
}

/** `file_crc32` of a serialized model (the Python runtime's `seqgen.modelfile.file_checksum`). */
export function fileChecksum(data) {
  return scan(data, true).checksum;
}

/**
 * Refuse a file whose bytes or seqgen metadata changed since export; a file without a checksum is refused,
 * so deleting it cannot switch the check off (the Python runtime's messages).
 */
function verifyChecksum(source, metadata, checksum) {
  const expected = metadata.get(PREFIX + CHECKSUM_KEY);
  if (expected === undefined) {
    throw new SeqgenError(`${source} has no ${CHECKSUM_KEY} checksum (it was edited, or is older than this seqgen); ` +
      're-export it, or stamp an older file of yours with seqgen.train.export.restamp');
  }
  if (expected.toLowerCase() !== checksum) {
    throw new SeqgenError(`${source}: contents do not match their recorded checksum; the file is corrupted or was ` +
      'edited, get it again or re-export it');
  }
}

/**
 * A metadata value as the JSON it holds (numbers, structures); text, and numbers too large for a double,
 * stay text. Deep nesting and lone surrogates (which no output can print) are refused, as in Python.
 */
export function decoded(value) {
  const tooDeep = () => new SeqgenError(`metadata value is JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
  let parsed;
  try {
    parsed = JSON.parse(value);
  } catch (error) {
    if (error instanceof RangeError) throw tooDeep();
    return value;
  }
  if (typeof parsed === 'number' && !Number.isFinite(parsed)) return value;
  const pending = [[parsed, 1]];
  while (pending.length) {
    const [item, depth] = pending.pop();
    if (depth > MAX_JSON_DEPTH) throw tooDeep();
    if (Array.isArray(item)) {
      for (const v of item) pending.push([v, depth + 1]);
    } else if (item !== null && typeof item === 'object') {
      for (const [k, v] of Object.entries(item)) pending.push([k, depth], [v, depth + 1]);
    } else if (typeof item === 'string' && !item.isWellFormed()) {
      throw new SeqgenError('metadata value holds a lone surrogate (\\ud800-\\udfff), which is not text');
    }
  }
  return parsed;
}

/**
 * Refuse a file this package cannot read (docs/model-format.md, "Format versions"): the version is MAJOR or
 * MAJOR.MINOR; any minor of a major from OLDEST_FORMAT_VERSION to FORMAT_VERSION is read, as a newer minor only
 * adds what an older reader may ignore. The messages are the Python runtime's.
 */
function checkFormatVersion(source, text) {
  if (!/^(0|[1-9][0-9]{0,11})(\.(0|[1-9][0-9]{0,11}))?$/.test(text)) {
    throw new SeqgenError(`${source}: model format version ${pyRepr(text)} is not MAJOR or MAJOR.MINOR; the file ` +
      'is damaged, get it again or re-export it');
  }
  const major = Number(text.split('.')[0]);
  if (major > FORMAT_VERSION) {
    throw new SeqgenError(`${source}: model format version ${pyRepr(text)} is newer than this seqgen reads ` +
      `(up to ${FORMAT_VERSION}.x); upgrade seqgen: pip install -U seqgen`);
  }
  if (major < OLDEST_FORMAT_VERSION) {
    throw new SeqgenError(`${source}: model format version ${pyRepr(text)} is older than this seqgen reads ` +
      `(from ${OLDEST_FORMAT_VERSION}.x); re-export the model with this seqgen (seqgen-train export)`);
  }
}

/** A size written in plain decimal digits ("2", never "+2", " 2", "2.0" or "٢"), within 1..limit. */
function size(source, key, text, limit) {
  if (!/^[0-9]{1,12}$/.test(text)) {
    throw new SeqgenError(`${source}: metadata ${key}=${pyRepr(text)} is not a number; re-export the model`);
  }
  const number = Number(text);
  if (!(number >= 1 && number <= limit)) {
    throw new SeqgenError(`${source}: metadata ${key}=${number} is outside 1..${limit}; the file is damaged`);
  }
  return number;
}

/** An optional metadata word, exactly one of `values` ("false" is not true, "True" is not a value). */
function choice(source, meta, key, values, fallback) {
  const text = meta.get(key) ?? fallback;
  if (!Object.hasOwn(values, text)) {
    throw new SeqgenError(`${source}: metadata ${key}=${pyRepr(text)} is not one of ${Object.keys(values).join(', ')}; ` +
      're-export the model');
  }
  return values[text];
}

/** A SeqgenError about the file, named once (as the Python runtime words it). */
function named(source, error) {
  return error.message.includes(source) ? error : new SeqgenError(`${source}: ${error.message}`);
}

/**
 * Read and check a model file's bytes (a Uint8Array); `source` names it in errors. Returns
 * { source, metadata, info, vocab, cell, layers, hiddenSize, embeddingSize, lineItems }.
 */
export async function readModelFile(bytes, source, { verify = true } = {}) {
  if (bytes.length === 0) throw new SeqgenError(`model file ${source} is empty; export or download it again`);
  let scanned;
  let facts;
  try {
    scanned = scan(bytes, verify);
    if (scanned.graph === null) {
      throw new SeqgenError(`${source} has no graph; it is not a complete ONNX model, export it again`);
    }
    facts = graphFacts(scanned.graph);
  } catch (error) {
    if (error instanceof WireError) {
      throw new SeqgenError(`${source} is not a readable ONNX file (truncated or not ONNX); export it again`);
    }
    throw error instanceof SeqgenError ? named(source, error) : error;
  }
  const { metadata } = scanned;
  const missing = REQUIRED_KEYS.filter((k) => !metadata.has(PREFIX + k));
  if (missing.length) {
    const hint = missing.length === REQUIRED_KEYS.length ? 'it is not a seqgen model' : 'its metadata is incomplete';
    throw new SeqgenError(`${source}: ${hint} (missing ${missing.join(', ')}); export it with seqgen-train export`);
  }
  const meta = new Map([...metadata].filter(([k]) => k.startsWith(PREFIX)).map(([k, v]) => [k.slice(PREFIX.length), v]));
  const formatVersion = meta.get('format_version');
  const cell = meta.get('cell');
  checkFormatVersion(source, formatVersion);
  if (!CELL_NAMES.includes(cell)) {
    throw new SeqgenError(`${source}: unknown cell type ${pyRepr(cell)}; expected one of ${CELL_NAMES.join(', ')}`);
  }
  const sizes = {};
  for (const [key, limit] of [['layers', MAX_LAYERS], ['hidden_size', MAX_HIDDEN], ['embedding_size', MAX_HIDDEN],
    ['vocab_size', MAX_VOCAB]]) {
    sizes[key] = size(source, key, meta.get(key), limit);
  }
  const lineItems = choice(source, meta, 'line_items', FLAGS, 'false');
  const quantized = choice(source, meta, 'quantization', QUANTIZATIONS, 'none');
  let vocab;
  try {
    vocab = Vocabulary.fromJson(meta.get('vocabulary'));
    for (const [key, value] of meta) if (key !== 'vocabulary') decoded(value);
  } catch (error) {
    throw error instanceof SeqgenError ? new SeqgenError(`${source}: ${error.message}`) : error;
  }
  if (vocab.size !== sizes.vocab_size) {
    throw new SeqgenError(`${source}: vocabulary has ${vocab.size} tokens but metadata says ` +
      `vocab_size=${sizes.vocab_size}; the file was edited or damaged, re-export it`);
  }
  if (lineItems && vocab.chars.some((c) => c === '\n' || c === '\r')) {
    throw new SeqgenError(`${source}: metadata says line_items=true but the vocabulary holds a line end, which no ` +
      'line item contains; the file was edited or damaged, re-export it');
  }
  try {
    checkAgainstGraph(facts, cell, sizes.layers, sizes.hidden_size, sizes.embedding_size, sizes.vocab_size, quantized);
  } catch (error) {
    if (!(error instanceof SeqgenError)) throw error;
    throw new SeqgenError(`${source}: ${error.message}; the file was edited or damaged, re-export it`);
  }
  if (verify) verifyChecksum(source, metadata, scanned.checksum);
  const info = {};
  for (const [key, value] of metadata) {
    const name = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
    const decodedValue = TEXT_KEYS.has(name) ? value : infoValue(value);  // a key named __proto__ stays a key
    Object.defineProperty(info, name, { value: decodedValue, enumerable: true, writable: true, configurable: true });
  }
  info.vocabulary = vocab.chars.join('');
  return {
    source, metadata: Object.fromEntries(metadata), info, vocab, cell, layers: sizes.layers,
    hiddenSize: sizes.hidden_size, embeddingSize: sizes.embedding_size, lineItems, quantized,
  };
}

/** A value for `info`: a key outside seqgen's (not checked on load) that cannot be decoded stays text. */
function infoValue(value) {
  try {
    return decoded(value);
  } catch {
    return value;
  }
}
