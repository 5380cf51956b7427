/**
 * What a model file's graph itself says about the model (runtime/graph.py), read in one pass over its
 * protobuf bytes, and the load check that ties the metadata to it: the cell is the recurrent operator, the
 * layers are how many there are, the sizes are attributes and weight shapes, int8 is the weights' type.
 */
import { CELLS } from './cells.js';
import { SeqgenError, byCodePoint, pyRepr, pyValue } from './errors.js';
import { BYTES, VARINT, WireError, fields, varints } from './wire.js';

/** Field numbers of onnx.proto read here. */
const FIELD = Object.freeze({
  graphNode: 1, graphInitializer: 5, graphInput: 11, graphOutput: 12, nodeInput: 1, nodeOpType: 4, nodeAttribute: 5,
  attrName: 1, attrInt: 3, attrStrings: 9, tensorDims: 1, tensorDataType: 2, tensorName: 8, tensorDataLocation: 14,
  tensorExternalData: 13, valueName: 1, valueType: 2, typeTensor: 1, tensorShape: 2, shapeDim: 1, dimValue: 1,
});
const EXTERNAL = 1;
/** TensorProto data types of int8 weights: UINT8 and INT8. */
const INT8_TYPES = new Set([2, 3]);
const ROWS = Object.entries(CELLS);
/** Recurrent operators (int8 ones included) and the cell each computes (null: it depends on the activation). */
const RECURRENT = new Map(ROWS.flatMap(([name, row]) => [row.onnxOp, row.quantizedOp]
  .filter((op) => op !== null).map((op) => [op, row.activations ? null : name])));
/** The activations of an operator whose cell depends on them (as JSON), and the cell they make. */
const ACTIVATIONS = new Map(ROWS.filter(([, row]) => row.activations)
  .map(([name, row]) => [JSON.stringify(row.activations), name]));
/** Every cell's state inputs: whichever the graph has must have the declared layers and hidden size. */
const STATE_NAMES = [...new Set(ROWS.flatMap(([, row]) => row.stateNames))];
const MATMULS = ['MatMul', 'MatMulInteger'];

const textDecoder = new TextDecoder('utf-8', { ignoreBOM: true });

function text(value) {
  if (!(value instanceof Uint8Array)) throw new WireError('text field with a number');
  return textDecoder.decode(value);
}

/** Sub-messages of `buf` with field number `number`. */
function* messages(buf, number) {
  for (const [n, k, v] of fields(buf)) if (n === number && k === BYTES) yield v;
}

/**
 * The facts of a serialized GraphProto: { inputs, outputs (Maps of name to dims, null where dynamic),
 * initializers (Map of name to [dims, data type]), nodes ([{ opType, inputs, attributes }]) }.
 * Weights stored outside the file are refused.
 */
export function graphFacts(graph) {
  const facts = { inputs: new Map(), outputs: new Map(), initializers: new Map(), nodes: [] };
  for (const [number, kind, value] of fields(graph)) {
    if (kind !== BYTES) continue;
    if (number === FIELD.graphNode) {
      facts.nodes.push(node(value));
    } else if (number === FIELD.graphInitializer) {
      const [name, dims, dataType] = tensor(value);
      facts.initializers.set(name, [dims, dataType]);
    } else if (number === FIELD.graphInput || number === FIELD.graphOutput) {
      const [name, dims] = valueInfo(value);
      (number === FIELD.graphInput ? facts.inputs : facts.outputs).set(name, dims);
    }
  }
  return facts;
}

function node(buf) {
  const result = { opType: '', inputs: [], attributes: new Map() };
  for (const [number, kind, value] of fields(buf)) {
    if (number === FIELD.nodeInput) {
      result.inputs.push(text(value));
    } else if (number === FIELD.nodeOpType) {
      result.opType = text(value);
    } else if (number === FIELD.nodeAttribute && kind === BYTES) {
      let name = '';
      let integer = null;
      const strings = [];
      for (const [n, k, v] of fields(value)) {
        if (n === FIELD.attrName) name = text(v);
        else if (n === FIELD.attrInt && k === VARINT) integer = v;
        else if (n === FIELD.attrStrings) strings.push(text(v));
      }
      result.attributes.set(name, integer ?? strings);
    }
  }
  return result;
}

function tensor(buf) {
  let name = '';
  let dataType = 0;
  const dims = [];
  for (const [number, kind, value] of fields(buf)) {
    if (number === FIELD.tensorName) {
      name = text(value);
    } else if (number === FIELD.tensorDims) {
      if (kind === VARINT) dims.push(value);
      else if (value instanceof Uint8Array) dims.push(...varints(value));
      else throw new WireError('dims of a fixed width');
    } else if (number === FIELD.tensorDataType && kind === VARINT) {
      dataType = value;
    } else if ((number === FIELD.tensorDataLocation && !(value instanceof Uint8Array) && Number(value) === EXTERNAL) ||
        number === FIELD.tensorExternalData) {
      throw new SeqgenError('model stores weights in external data files; a seqgen model is one file');
    }
  }
  return [name, dims, dataType];
}

/** Name and dimensions (null where dynamic) of a ValueInfoProto: type -> tensor_type -> shape -> dim. */
function valueInfo(buf) {
  let name = '';
  const dims = [];
  for (const [n, k, v] of fields(buf)) {
    if (n === FIELD.valueName) name = text(v);
    if (n !== FIELD.valueType || k !== BYTES) continue;
    const tensors = [...messages(v, FIELD.typeTensor)];
    const shapes = tensors.flatMap((t) => [...messages(t, FIELD.tensorShape)]);
    for (const dim of shapes.flatMap((s) => [...messages(s, FIELD.shapeDim)])) {
      const values = [...fields(dim)].filter(([m, j]) => m === FIELD.dimValue && j === VARINT).map(([, , x]) => x);
      dims.push(values.length ? values[0] : null);
    }
  }
  return [name, dims];
}

function cellOf(graphNode) {
  const cell = RECURRENT.get(graphNode.opType);
  if (cell !== null) return cell;
  const activation = graphNode.attributes.get('activations') ?? ['Tanh'];
  const known = Array.isArray(activation) ? ACTIVATIONS.get(JSON.stringify(activation)) : undefined;
  return known ?? `RNN ${pyValue(activation)}`;
}


const sameDims = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Refuse metadata that the graph contradicts (the messages are the Python runtime's): the cell is the
 * recurrent operator's, layers their count, the hidden size their attribute and recurrent weights' shape,
 * the embedding and vocabulary sizes the embedding table's and output layer's shapes, int8 the weights' type.
 */
export function checkAgainstGraph(facts, cell, layers, hidden, embedding, vocabSize, quantized) {
  const recurrent = facts.nodes.filter((n) => RECURRENT.has(n.opType));
  const cells = [...new Set(recurrent.map(cellOf))].sort(byCodePoint);
  if (cells.length !== 1 || cells[0] !== cell) {
    throw new SeqgenError(`metadata says cell=${pyRepr(cell)} but the graph's recurrent layers are ` +
      `${cells.join(', ') || 'missing'}`);
  }
  if (recurrent.length !== layers) {
    throw new SeqgenError(`metadata says layers=${layers} but the graph has ${recurrent.length} recurrent layers`);
  }
  const gates = CELLS[cell].gates * hidden;
  for (const n of recurrent) {
    const weights = facts.initializers.get(n.inputs.length > 2 ? n.inputs[2] : '')?.[0] ?? [];
    const size = n.attributes.get('hidden_size');
    if (size !== hidden || !(sameDims(weights, [1, gates, hidden]) || sameDims(weights, [1, hidden, gates]))) {
      throw new SeqgenError(`metadata says hidden_size=${hidden} but a recurrent layer of the graph has ` +
        `hidden_size ${pyValue(size)} and weights of shape ${pyValue(weights)}`);
    }
  }
  for (const name of STATE_NAMES) {
    const dims = facts.inputs.get(name);
    for (const [axis, key, declared] of [[0, 'layers', layers], [2, 'hidden_size', hidden]]) {
      if (dims !== undefined && dims.length === 3 && dims[axis] !== null && dims[axis] !== declared) {
        throw new SeqgenError(`metadata says ${key}=${declared} but the graph's ${pyRepr(name)} input has ${dims[axis]}`);
      }
    }
  }
  const shapes = (ops, at) => facts.nodes
    .filter((n) => ops.includes(n.opType) && n.inputs.length > at && facts.initializers.has(n.inputs[at]))
    .map((n) => facts.initializers.get(n.inputs[at])[0]);
  const tables = shapes(['Gather'], 0);
  if (tables.length !== 1 || !sameDims(tables[0], [vocabSize, embedding])) {
    throw new SeqgenError(`metadata says vocab_size=${vocabSize} and embedding_size=${embedding} but the graph's ` +
      `embedding tables have shapes ${tables.length ? pyValue(tables) : 'none'}`);
  }
  const heads = shapes(MATMULS, 1);
  const logits = facts.outputs.get('logits') ?? [];
  if (heads.length !== 1 || !sameDims(heads[0], [hidden, vocabSize]) ||
      (logits.length === 3 && logits[2] !== null && logits[2] !== vocabSize)) {
    throw new SeqgenError(`metadata says vocab_size=${vocabSize} but the graph's output layer has shapes ` +
      `${heads.length ? pyValue(heads) : 'none'} and its logits ${pyValue(logits)}`);
  }
  const int8 = [...facts.initializers.values()].some(([, dataType]) => INT8_TYPES.has(dataType));
  if (int8 !== quantized) {
    throw new SeqgenError(`metadata says quantization=${quantized ? 'int8' : 'none'} but the graph's weights ` +
      `are ${int8 ? '' : 'not '}int8`);
  }
}
