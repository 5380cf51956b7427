"""What a model file's graph itself says about the model, read in one pass over its protobuf bytes.

The load check ties the metadata to these facts (docs/model-format.md): the cell is the recurrent
operator, the layers are how many there are, the sizes are attributes and weight shapes, and
int8 quantization is the type of the weights. Metadata that disagrees is refused before use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .cells import CELLS
from .errors import SeqgenError
from .wire import BYTES, VARINT, WireError, fields, varints

# Field numbers of onnx.proto read here.
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
_NODE_INPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 4, 5
_ATTR_NAME, _ATTR_INT, _ATTR_STRINGS = 1, 3, 9
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_NAME = 1, 2, 8
_TENSOR_DATA_LOCATION, _TENSOR_EXTERNAL_DATA, _EXTERNAL = 14, 13, 1
_VALUE_NAME, _VALUE_TYPE, _TYPE_TENSOR, _TENSOR_SHAPE, _SHAPE_DIM, _DIM_VALUE = 1, 2, 1, 2, 1, 1
INT8_TYPES = frozenset({2, 3})
"""TensorProto data types of int8 weights: UINT8 and INT8."""


@dataclass
class Node:
    """One operator: its type, input names, and the integer and string-list attributes."""

    op_type: str
    inputs: list[str]
    attributes: dict[str, int | list[str]] = field(default_factory=dict)


@dataclass
class GraphFacts:
    """Names and shapes (None where dynamic) of the inputs and outputs, the initializers' shapes and
    data types, and the operators in order."""

    inputs: dict[str, list[int | None]] = field(default_factory=dict)
    outputs: dict[str, list[int | None]] = field(default_factory=dict)
    initializers: dict[str, tuple[list[int], int]] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)


def graph_facts(graph: memoryview) -> GraphFacts:
    """The facts of a serialized GraphProto; weights stored outside the file are refused."""
    facts = GraphFacts()
    for number, kind, value in fields(graph):
        if kind != BYTES:
            continue
        if number == _GRAPH_NODE:
            facts.nodes.append(_node(value))
        elif number == _GRAPH_INITIALIZER:
            name, dims, data_type = _tensor(value)
            facts.initializers[name] = (dims, data_type)
        elif number in (_GRAPH_INPUT, _GRAPH_OUTPUT):
            name, dims = _value_info(value)
            (facts.inputs if number == _GRAPH_INPUT else facts.outputs)[name] = dims
    return facts


def _text(value: int | memoryview) -> str:
    if isinstance(value, int):
        raise WireError("text field with a number")
    return bytes(value).decode("utf-8", "replace")


def _node(node: memoryview) -> Node:
    result = Node("", [])
    for number, kind, value in fields(node):
        if number == _NODE_INPUT:
            result.inputs.append(_text(value))
        elif number == _NODE_OP_TYPE:
            result.op_type = _text(value)
        elif number == _NODE_ATTRIBUTE and kind == BYTES:
            name, strings, integer = "", [], None
            for n, k, v in fields(value):  # type: ignore[arg-type]
                if n == _ATTR_NAME:
                    name = _text(v)
                elif n == _ATTR_INT and k == VARINT:
                    integer = v
                elif n == _ATTR_STRINGS:
                    strings.append(_text(v))
            result.attributes[name] = integer if integer is not None else strings  # type: ignore[assignment]
    return result


def _tensor(tensor: memoryview) -> tuple[str, list[int], int]:
    name, dims, data_type = "", [], 0
    for number, kind, value in fields(tensor):
        if number == _TENSOR_NAME:
            name = _text(value)
        elif number == _TENSOR_DIMS:
            dims.extend([value] if kind == VARINT else varints(value))  # type: ignore[list-item, arg-type]
        elif number == _TENSOR_DATA_TYPE and kind == VARINT:
            data_type = value  # type: ignore[assignment]
        elif (number == _TENSOR_DATA_LOCATION and value == _EXTERNAL) or number == _TENSOR_EXTERNAL_DATA:
            raise SeqgenError("model stores weights in external data files; a seqgen model is one file")
    return name, dims, data_type


def _value_info(value: memoryview) -> tuple[str, list[int | None]]:
    name, dims = "", []
    for n, k, v in fields(value):
        if n == _VALUE_NAME:
            name = _text(v)
        elif n == _VALUE_TYPE and k == BYTES:
            tensors = [t for m, j, t in fields(v) if m == _TYPE_TENSOR and j == BYTES]  # type: ignore[arg-type]
            shapes = [s for t in tensors for m, j, s in fields(t) if m == _TENSOR_SHAPE and j == BYTES]
            for dim in (d for s in shapes for m, j, d in fields(s) if m == _SHAPE_DIM and j == BYTES):
                values = [x for m, j, x in fields(dim) if m == _DIM_VALUE and j == VARINT]
                dims.append(values[0] if values else None)
    return name, dims


def _cells_by_operator() -> dict[str, str | None]:
    """Each recurrent operator of the cell table and the cell it computes; None where several cells share
    the operator and its activation tells them apart (RNN: tanh or ReLU)."""
    cells: dict[str, set[str]] = {}
    for name, row in CELLS.items():
        for op in filter(None, (row.onnx_op, row.quantized_op)):
            cells.setdefault(op, set()).add(name)
    return {op: next(iter(names)) if len(names) == 1 else None for op, names in cells.items()}


RECURRENT = _cells_by_operator()
ACTIVATIONS = {tuple(row.onnx_attributes["activations"]): name for name, row in CELLS.items() if row.onnx_op == "RNN"}
"""The RNN operator's activation and the cell it makes."""
MATMULS = ("MatMul", "MatMulInteger")
STATE_NAMES = tuple(dict.fromkeys(name for row in CELLS.values() for name in row.state_names))
"""Every cell's state inputs: whichever the graph has must have the declared layers and hidden size."""


def _cell(node: Node) -> str:
    cell = RECURRENT[node.op_type]
    if cell is not None:
        return cell
    activation = node.attributes.get("activations", ["Tanh"])
    readable = isinstance(activation, list) and all(isinstance(a, str) for a in activation)
    known = ACTIVATIONS.get(tuple(activation)) if readable else None
    return known or f"RNN {activation}"


def check_against_graph(facts: GraphFacts, cell: str, layers: int, hidden: int, embedding: int, vocab_size: int,
                        quantized: bool) -> None:
    """Refuse metadata that the graph contradicts: the cell is the recurrent operator's, layers their
    count, the hidden size their attribute and recurrent weights' shape, the embedding and vocabulary
    sizes the embedding table's and output layer's shapes, int8 quantization the weights' type."""
    from .modelfile import LOGITS_OUTPUT  # here: modelfile imports this module
    recurrent = [node for node in facts.nodes if node.op_type in RECURRENT]
    cells = sorted({_cell(node) for node in recurrent})
    if cells != [cell]:
        raise SeqgenError(f"metadata says cell={cell!r} but the graph's recurrent layers are "
                          f"{', '.join(cells) or 'missing'}")
    if len(recurrent) != layers:
        raise SeqgenError(f"metadata says layers={layers} but the graph has {len(recurrent)} recurrent layers")
    gates = CELLS[cell].gates * hidden
    for node in recurrent:
        weights = facts.initializers.get(node.inputs[2] if len(node.inputs) > 2 else "", ([], 0))[0]
        if node.attributes.get("hidden_size") != hidden or weights not in ([1, gates, hidden], [1, hidden, gates]):
            raise SeqgenError(f"metadata says hidden_size={hidden} but a recurrent layer of the graph has "
                              f"hidden_size {node.attributes.get('hidden_size')} and weights of shape {weights}")
    for name in STATE_NAMES:
        dims = facts.inputs.get(name)
        for axis, key, declared in ((0, "layers", layers), (2, "hidden_size", hidden)):
            if dims is not None and len(dims) == 3 and dims[axis] is not None and dims[axis] != declared:
                raise SeqgenError(f"metadata says {key}={declared} but the graph's {name!r} input has {dims[axis]}")
    tables = [facts.initializers[n.inputs[0]][0] for n in facts.nodes
              if n.op_type == "Gather" and n.inputs and n.inputs[0] in facts.initializers]
    if tables != [[vocab_size, embedding]]:
        raise SeqgenError(f"metadata says vocab_size={vocab_size} and embedding_size={embedding} but the graph's "
                          f"embedding tables have shapes {tables or 'none'}")
    heads = [facts.initializers[n.inputs[1]][0] for n in facts.nodes
             if n.op_type in MATMULS and len(n.inputs) > 1 and n.inputs[1] in facts.initializers]
    logits = facts.outputs.get(LOGITS_OUTPUT, [])
    if heads != [[hidden, vocab_size]] or (len(logits) == 3 and logits[2] not in (None, vocab_size)):
        raise SeqgenError(f"metadata says vocab_size={vocab_size} but the graph's output layer has shapes "
                          f"{heads or 'none'} and its logits {logits}")
    int8 = any(data_type in INT8_TYPES for _, data_type in facts.initializers.values())
    if int8 != quantized:
        raise SeqgenError(f"metadata says quantization={'int8' if quantized else 'none'} but the graph's weights "
                          f"are {'' if int8 else 'not '}int8")
