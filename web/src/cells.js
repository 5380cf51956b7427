/**
 * The recurrent cells seqgen knows, one row each, as the Python runtime's table (runtime/cells.py); the
 * other modules derive what they need from it, and a unit test compares it with Python's at test time.
 */

/**
 * Per cell: the graph's recurrent state inputs (outputs add "_out"), whether the state stays bounded,
 * the ONNX operator of one layer and its int8 form, gate blocks per layer, and the RNN operator's activations.
 */
export const CELLS = Object.freeze({
  rnn_tanh: { stateNames: ['state'], bounded: true, onnxOp: 'RNN', quantizedOp: null, gates: 1, activations: ['Tanh'] },
  rnn_relu: { stateNames: ['state'], bounded: false, onnxOp: 'RNN', quantizedOp: null, gates: 1, activations: ['Relu'] },
  lstm: { stateNames: ['state', 'cell'], bounded: true, onnxOp: 'LSTM', quantizedOp: 'DynamicQuantizeLSTM', gates: 4 },
  gru: { stateNames: ['state'], bounded: true, onnxOp: 'GRU', quantizedOp: null, gates: 3 },
});

/** The cell names, in the order messages list them. */
export const CELL_NAMES = Object.keys(CELLS);

/** The graph's recurrent state inputs for a cell type (outputs add "_out"). */
export function stateNames(cell) {
  return [...CELLS[cell].stateNames];
}

/** The cells whose state cannot overflow. */
export const BOUNDED_NAMES = CELL_NAMES.filter((name) => CELLS[name].bounded);
