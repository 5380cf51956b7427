"""The recurrent cells seqgen knows, one row each: what the runtime, the trainer and the exporter ask about a cell.

A new cell is one row here (plus its torch module, where torch.nn has none). No imports: the runtime
reads this table without torch or onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cell:
    """One cell type: its graph state, its ONNX operator and how torch's weights map onto it."""

    state_names: tuple[str, ...]
    """The step graph's recurrent state inputs, each [layers, batch, hidden] (outputs add "_out")."""
    bounded: bool
    """Whether the state stays bounded; an unbounded one (ReLU) can overflow on long texts and is checked."""
    onnx_op: str
    """The ONNX operator of one layer (one node per layer)."""
    gate_order: tuple[int, ...]
    """ONNX's gate block j holds torch's gate block gate_order[j] (weights and biases are stacked by gate)."""
    onnx_attributes: dict[str, object] = field(default_factory=dict)
    """Attributes of the ONNX node besides hidden_size that make it compute what torch computes."""
    torch_module: str = "RNN"
    """The torch.nn class of the stacked layers (a name: the runtime never imports torch)."""
    torch_options: dict[str, object] = field(default_factory=dict)
    """Keyword arguments of the torch module besides the sizes."""
    forget_gate: int | None = None
    """torch's gate block of the forget gate, where the cell has one (its starting bias is a training option)."""
    quantized_op: str | None = None
    """The operator onnxruntime's int8 quantization puts in place of onnx_op, where it has an int8 kernel."""

    @property
    def gates(self) -> int:
        """Gate blocks per layer: rows of a weight matrix are gates x hidden."""
        return len(self.gate_order)


CELLS: dict[str, Cell] = {
    "rnn_tanh": Cell(("state",), True, "RNN", (0,), {"activations": ["Tanh"]}, "RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": Cell(("state",), False, "RNN", (0,), {"activations": ["Relu"]}, "RNN", {"nonlinearity": "relu"}),
    # torch i, f, g, o -> ONNX i, o, f, c
    "lstm": Cell(("state", "cell"), True, "LSTM", (0, 3, 1, 2), {}, "LSTM", forget_gate=1,
                 quantized_op="DynamicQuantizeLSTM"),
    # torch r, z, n -> ONNX z, r, h; torch applies the reset gate after the recurrent product
    "gru": Cell(("state",), True, "GRU", (1, 0, 2), {"linear_before_reset": 1}, "GRU"),
}
NAMES = tuple(CELLS)
"""The cell names, in the order the CLI lists them."""


def cell(name: str) -> Cell:
    """The row of cell `name`; a KeyError names the known cells."""
    try:
        return CELLS[name]
    except KeyError:
        raise KeyError(f"unknown cell {name!r}; expected one of {', '.join(NAMES)}") from None


def state_names(name: str) -> tuple[str, ...]:
    """The graph's recurrent state inputs for a cell type (outputs add "_out")."""
    return cell(name).state_names


def bounded_names() -> tuple[str, ...]:
    """The cells whose state cannot overflow."""
    return tuple(name for name, row in CELLS.items() if row.bounded)
