/**
 * The seqgen model file (docs/model-format.md) read from its bytes: metadata, vocabulary and the checks
 * the Python runtime makes (runtime/modelfile.py) before onnxruntime sees the graph.
 */
import { SeqgenError, pyRepr } from './errors.js';
import { BYTES, VARINT, WireError, fields } from './wire.js';
import { Vocabulary } from './vocab.js';

export const FORMAT_VERSION = 1;
export const CELLS = ['rnn_tanh', 'rnn_relu', 'lstm', 'gru'];
export const PREFIX = 'seqgen.';
const REQUIRED_KEYS = ['format_version', 'vocabulary', 'cell', 'layers', 'hidden_size', 'embedding_size', 'vocab_size'];
const TEXT_KEYS = new Set(['graph_crc32', 'graph_sha256', 'corpus', 'corpus_sha256', 'created', 'seqgen_version']);
const MAX_LAYERS = 64;
const MAX_HIDDEN = 65_536;
const MAX_VOCAB = 1_114_113;

/** Field numbers of onnx.proto that the checks below read. */
const FIELD = Object.freeze({
  modelGraph: 7, modelMetadata: 14, graphInitializer: 5, graphInput: 11, tensorExternalData: 13, tensorDataLocation: 14,
});

/** The graph's recurrent state inputs for a cell type (outputs add "_out"). */
export function stateNames(cell) {
  return cell === 'lstm' ? ['state', 'cell'] : ['state'];
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** zlib's CRC-32 of some bytes, as 8 lowercase hex digits. */
export function crc32(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return ((crc ^ 0xffffffff) >>> 0).toString(16).padStart(8, '0');
}

/**
 * The file's integrity check, today's scheme of docs/model-format.md in one place: CRC-32 of the
 * serialized GraphProto against `graph_crc32`; files from before it carry only `graph_sha256`.
 */
export async function verifyChecksum(source, graph, metadata) {
  let intact = true;
  const crc = metadata[PREFIX + 'graph_crc32'];
  const sha = metadata[PREFIX + 'graph_sha256'];
  if (crc !== undefined) {
    intact = crc32(graph) === crc.toLowerCase();
  } else if (sha !== undefined) {
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', graph));
    intact = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('') === sha.toLowerCase();
  }
  if (!intact) {
    throw new SeqgenError(`${source}: weights do not match their recorded checksum; the file is corrupted, get it again`);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Metadata and the graph's bytes; throws WireError for bytes that are not protobuf. */
function scan(data) {
  const metadata = {};
  let graph = null;
  for (const [number, kind, value] of fields(data)) {
    if (number === FIELD.modelGraph && kind === BYTES) {
      graph = value;
    } else if (number === FIELD.modelMetadata && kind === BYTES) {
      const entry = {};
      try {
        for (const [n, k, v] of fields(value)) if (k === BYTES) entry[n] = utf8.decode(v);
      } catch (error) {
        if (error instanceof WireError) throw error;
        throw new WireError('metadata is not UTF-8');
      }
      metadata[entry[1] ?? ''] = entry[2] ?? '';
    }
  }
  if (graph !== null) {
    for (const [number, kind, value] of fields(graph)) {
      if (number === FIELD.graphInitializer && kind === BYTES && isExternal(value)) {
        throw new SeqgenError('model stores weights in external data files; a seqgen model is one file');
      }
    }
  }
  return { metadata, graph };
}

function isExternal(tensor) {
  for (const [n, k, v] of fields(tensor)) {
    if ((n === FIELD.tensorDataLocation && k === VARINT && v === 1) || n === FIELD.tensorExternalData) return true;
  }
  return false;
}

/** Sub-messages of `buf` with field number `number`. */
function* messages(buf, number) {
  for (const [n, k, v] of fields(buf)) if (n === number && k === BYTES) yield v;
}

/** Name and dimensions (null where dynamic) of each graph input. */
function graphInputs(graph) {
  const inputs = {};
  for (const value of messages(graph, FIELD.graphInput)) {
    let name = '';
    const dims = [];
    for (const [n, k, v] of fields(value)) {
      if (n === 1 && k === BYTES) name = new TextDecoder().decode(v);
      if (n !== 2 || k !== BYTES) continue;  // ValueInfo.type -> TypeProto.tensor_type -> shape -> dim
      for (const tensor of messages(v, 1)) {
        for (const shape of messages(tensor, 2)) {
          for (const dim of messages(shape, 1)) {
            const values = [...fields(dim)].filter(([m, j]) => m === 1 && j === VARINT).map(([, , x]) => x);
            dims.push(values.length ? values[0] : null);
          }
        }
      }
    }
    inputs[name] = dims;
  }
  return inputs;
}

function checkStateInputs(source, graph, cell, layers, hidden) {
  let inputs;
  try {
    inputs = graphInputs(graph);
  } catch (error) {
    if (!(error instanceof WireError)) throw error;
    throw new SeqgenError(`${source} is not a readable ONNX file (damaged graph); export it again`);
  }
  if (('cell' in inputs) !== (cell === 'lstm')) {
    throw new SeqgenError(`${source}: metadata says cell=${pyRepr(cell)} but the graph is ` +
      `${'cell' in inputs ? '' : 'not '}an LSTM; the file was edited or damaged, re-export it`);
  }
  for (const name of ['state', 'cell']) {
    const dims = inputs[name];
    if (!dims || dims.length !== 3) continue;  // a malformed state input is reported when the graph is loaded
    for (const [axis, key, declared] of [[0, 'layers', layers], [2, 'hidden_size', hidden]]) {
      if (dims[axis] !== null && dims[axis] !== declared) {
        throw new SeqgenError(`${source}: metadata says ${key}=${declared} but the graph's ${pyRepr(name)} input has ` +
          `${dims[axis]}; the file was edited or damaged, re-export it`);
      }
    }
  }
}

/** A metadata value as the JSON it holds (numbers, structures); text, and numbers too large for a double, stay text. */
function decoded(value) {
  let parsed;
  try {
    parsed = JSON.parse(value);
  } catch {
    return value;
  }
  return typeof parsed === 'number' && !Number.isFinite(parsed) ? value : parsed;
}

/**
 * Read and check a model file's bytes (a Uint8Array); `source` names it in errors. Returns
 * { source, metadata, info, vocab, cell, layers, hiddenSize, embeddingSize, lineItems }.
 */
export async function readModelFile(bytes, source, { verify = true } = {}) {
  if (bytes.length === 0) throw new SeqgenError(`model file ${source} is empty; export or download it again`);
  let scanned;
  try {
    scanned = scan(bytes);
  } catch (error) {
    if (error instanceof WireError) {
      throw new SeqgenError(`${source} is not a readable ONNX file (truncated or not ONNX); export it again`);
    }
    if (error instanceof SeqgenError) throw new SeqgenError(`${source}: ${error.message}`);
    throw error;
  }
  const { metadata, graph } = scanned;
  if (graph === null) {
    throw new SeqgenError(`${source} has no graph; it is not a complete ONNX model, export it again`);
  }
  const missing = REQUIRED_KEYS.filter((k) => !(PREFIX + k in metadata));
  if (missing.length) {
    const hint = missing.length === REQUIRED_KEYS.length ? 'it is not a seqgen model' : 'its metadata is incomplete';
    throw new SeqgenError(`${source}: ${hint} (missing ${missing.join(', ')}); export it with seqgen-train export`);
  }
  const meta = Object.fromEntries(REQUIRED_KEYS.map((k) => [k, metadata[PREFIX + k]]));
  if (meta.format_version !== String(FORMAT_VERSION)) {
    throw new SeqgenError(`${source}: model format version ${pyRepr(meta.format_version)} is not supported by this ` +
      `seqgen (reads version ${FORMAT_VERSION}); upgrade seqgen or re-export the model`);
  }
  if (!CELLS.includes(meta.cell)) {
    throw new SeqgenError(`${source}: unknown cell type ${pyRepr(meta.cell)}; expected one of ${CELLS.join(', ')}`);
  }
  const sizes = {};
  for (const [key, limit] of [['layers', MAX_LAYERS], ['hidden_size', MAX_HIDDEN], ['embedding_size', MAX_HIDDEN],
    ['vocab_size', MAX_VOCAB]]) {
    if (!/^\s*[+-]?\d+\s*$/.test(meta[key])) {
      throw new SeqgenError(`${source}: metadata ${key}=${pyRepr(meta[key])} is not a number; re-export the model`);
    }
    sizes[key] = Number(meta[key]);
    if (!(sizes[key] >= 1 && sizes[key] <= limit)) {
      throw new SeqgenError(`${source}: metadata ${key}=${sizes[key]} is outside 1..${limit}; the file is damaged`);
    }
  }
  let vocab;
  try {
    vocab = Vocabulary.fromJson(meta.vocabulary);
  } catch (error) {
    throw error instanceof SeqgenError ? new SeqgenError(`${source}: ${error.message}`) : error;
  }
  if (vocab.size !== sizes.vocab_size) {
    throw new SeqgenError(`${source}: vocabulary has ${vocab.size} tokens but metadata says ` +
      `vocab_size=${sizes.vocab_size}; the file was edited or damaged, re-export it`);
  }
  checkStateInputs(source, graph, meta.cell, sizes.layers, sizes.hidden_size);
  if (verify) await verifyChecksum(source, graph, metadata);
  const info = {};
  for (const [key, value] of Object.entries(metadata)) {
    const name = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
    info[name] = TEXT_KEYS.has(name) ? value : decoded(value);
  }
  info.vocabulary = vocab.chars.join('');
  return {
    source, metadata, info, vocab, cell: meta.cell, layers: sizes.layers, hiddenSize: sizes.hidden_size,
    embeddingSize: sizes.embedding_size, lineItems: metadata[PREFIX + 'line_items'] === 'true',
  };
}
