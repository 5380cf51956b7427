"""Graph: a model file's step graph loaded into onnxruntime, with its input/output names and sizes.

Model holds one; Session and the windowed Keras call run the graph only through it, so nothing above
this module knows onnxruntime's API or the graph's names (those are the file format's: modelfile).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from .cells import cell
from .errors import SeqgenError
from .modelfile import LOGITS_OUTPUT, TOKENS_INPUT, ModelFile, state_output


def _ort_session(path: Path, threads: int, quantized: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the runtime reports problems itself
    if not quantized:  # pre-packed float weights cost ~25 MiB at H=512 for ~4% per step; int8 kernels need them
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad graph
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SeqgenError(f"{path}: onnxruntime cannot load the graph ({first_line}); re-export the model") from None


class Graph:
    """The step graph of one model file: token ids [batch, time] and state in, logits and new state out.
    Safe to share between threads (onnxruntime's session is)."""

    def __init__(self, file: ModelFile, threads: int) -> None:
        row = cell(file.cell)
        self.path: Path = file.path
        self.layers, self.hidden_size, self.vocab_size = file.layers, file.hidden_size, file.vocab.size
        self.state_names: tuple[str, ...] = row.state_names
        """The recurrent state inputs, each [layers, batch, hidden] float32."""
        self.output_names: list[str] = [LOGITS_OUTPUT, *(state_output(name) for name in self.state_names)]
        self.bounded: bool = row.bounded
        """Whether the cell's state stays bounded (an unbounded one can overflow to inf/NaN)."""
        self._ort = _ort_session(file.path, threads, quantized=file.quantized)
        self._check_signature()

    def _check_signature(self) -> None:
        """Refuse a graph whose inputs or outputs are not a seqgen step's (names, types, ranks, logits width)."""
        inputs = {i.name: i for i in self._ort.get_inputs()}
        outputs = {o.name: o for o in self._ort.get_outputs()}
        wanted_in = {TOKENS_INPUT: ("tensor(int64)", 2), **{n: ("tensor(float)", 3) for n in self.state_names}}
        wanted_out = {name: ("tensor(float)", 3) for name in self.output_names}
        for kind, have, wanted in (("input", inputs, wanted_in), ("output", outputs, wanted_out)):
            for name, (dtype, rank) in wanted.items():
                arg = have.get(name)
                if arg is None or arg.type != dtype or len(arg.shape) != rank:
                    raise SeqgenError(f"{self.path}: graph lacks {kind} {name!r} ({dtype}, rank {rank}); "
                                      "it is not a seqgen step graph, re-export it")
        width = outputs[LOGITS_OUTPUT].shape[2]
        if isinstance(width, int) and width != self.vocab_size:
            raise SeqgenError(f"{self.path}: logits have width {width} but the vocabulary has {self.vocab_size} "
                              "tokens; the file was edited or damaged, re-export it")

    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        """A fresh state for `batch` sequences: float32 zeros [layers, batch, hidden] per state input."""
        return {name: np.zeros((self.layers, batch, self.hidden_size), np.float32) for name in self.state_names}

    def run(self, tokens: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits [batch, time, vocab] for token ids [batch, time] (int64) fed from `state`, and the state
        after the last token, keyed by the state input names."""
        logits, *states = self._ort.run(self.output_names, {TOKENS_INPUT: tokens, **state})
        return logits, dict(zip(self.state_names, states))

    def io_binding(self) -> ort.IOBinding:
        """An onnxruntime IOBinding of this graph, for a caller that binds fixed buffers once (the
        per-character path): bind TOKENS_INPUT and the state inputs, then `output_names`."""
        return self._ort.io_binding()

    def run_with_iobinding(self, binding: ort.IOBinding) -> None:
        """Run the graph on the buffers bound to `binding` (made by `io_binding`)."""
        self._ort.run_with_iobinding(binding)
