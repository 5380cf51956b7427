"""Export a trained CharRNN to one self-describing ONNX step graph, checked against torch.

The graph is built with onnx.helper from the weights, using ONNX's native RNN/GRU/LSTM operators
(one node per layer), so batch and time stay dynamic and each generated character costs one step.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from seqgen import __version__
from seqgen.cells import CELLS, state_names
from seqgen.errors import SeqgenError
from seqgen.modelfile import (
    CHECKSUM_KEY,
    FORMAT_VERSION,
    GRAPH_CHECKSUM_KEYS,
    LOGITS_OUTPUT,
    PARITY_ABS_KEY,
    PARITY_REL_KEY,
    TOKENS_INPUT,
    file_checksum,
    graph_checksums,
    is_seqgen_key,
    seqgen_entries,
    state_output,
    stored_key,
)
from seqgen.vocab import Vocabulary

from . import checkpoint, runfolder
from .config import TrainConfig
from .files import atomic_write
from .models import CharRNN

OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_SHAPES = ((1, 1), (1, 17), (3, 1), (4, 33))
"""(batch, time) pairs checked against torch at export."""


class ParityError(RuntimeError):
    """The exported graph does not compute what the torch model computes."""


def _gates(weight: torch.Tensor, cell: str) -> np.ndarray:
    """torch's stacked gate blocks of `weight` in ONNX's order, with ONNX's leading direction axis."""
    order = CELLS[cell].gate_order
    blocks = weight.detach().float().numpy().reshape(len(order), -1, *weight.shape[1:])
    return np.concatenate([blocks[i] for i in order])[None]


def build_graph(model: CharRNN) -> onnx.GraphProto:
    """The step graph: tokens [batch, time] and state(s) [layers, batch, hidden] -> logits and new state(s)."""
    cell, layers, hidden = model.cell, model.layers, model.hidden_size
    states = state_names(cell)
    inits = [
        numpy_helper.from_array(model.embedding.weight.detach().float().numpy(), "embedding"),
        numpy_helper.from_array(model.head.weight.detach().float().numpy().T.copy(), "head_weight"),
        numpy_helper.from_array(model.head.bias.detach().float().numpy(), "head_bias"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Transpose", [TOKENS_INPUT], ["tokens_tb"], perm=[1, 0]),
        helper.make_node("Gather", ["embedding", "tokens_tb"], ["x0"]),
    ]
    attrs = {"hidden_size": hidden, **CELLS[cell].onnx_attributes}
    finals: dict[str, list[str]] = {s: [] for s in states}
    x = "x0"
    for layer in range(layers):
        w, r = (getattr(model.rnn, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh"))
        b = np.concatenate([_gates(getattr(model.rnn, f"{kind}_l{layer}"), cell)
                            for kind in ("bias_ih", "bias_hh")], axis=1)
        inits += [numpy_helper.from_array(_gates(w, cell), f"W{layer}"),
                  numpy_helper.from_array(_gates(r, cell), f"R{layer}"),
                  numpy_helper.from_array(b, f"B{layer}"),
                  numpy_helper.from_array(np.array([layer], np.int64), f"at{layer}"),
                  numpy_helper.from_array(np.array([layer + 1], np.int64), f"to{layer}")]
        initial = []
        for s in states:
            nodes.append(helper.make_node("Slice", [s, f"at{layer}", f"to{layer}"], [f"{s}{layer}"]))
            initial.append(f"{s}{layer}")
            finals[s].append(f"{state_output(s)}{layer}")
        inputs = [x, f"W{layer}", f"R{layer}", f"B{layer}", "", *initial]  # "" = no sequence_lens
        outputs = [f"y{layer}", *(finals[s][-1] for s in states)]
        nodes.append(helper.make_node(CELLS[cell].onnx_op, inputs, outputs, name=f"layer{layer}", **attrs))
        nodes.append(helper.make_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"]))
        x = f"x{layer + 1}"
    for s in states:
        nodes.append(helper.make_node("Concat", finals[s], [state_output(s)], axis=0) if layers > 1
                     else helper.make_node("Identity", finals[s], [state_output(s)]))
    nodes += [
        helper.make_node("MatMul", [x, "head_weight"], ["scores_tb"]),
        helper.make_node("Add", ["scores_tb", "head_bias"], ["logits_tb"]),
        helper.make_node("Transpose", ["logits_tb"], [LOGITS_OUTPUT], perm=[1, 0, 2]),
    ]
    state_shape = [layers, "batch", hidden]
    graph_inputs = [helper.make_tensor_value_info(TOKENS_INPUT, TensorProto.INT64, ["batch", "time"])]
    graph_inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, state_shape) for s in states]
    logits_shape = ["batch", "time", model.vocab_size]
    graph_outputs = [helper.make_tensor_value_info(LOGITS_OUTPUT, TensorProto.FLOAT, logits_shape)]
    graph_outputs += [helper.make_tensor_value_info(state_output(s), TensorProto.FLOAT, state_shape) for s in states]
    return helper.make_graph(nodes, f"seqgen_{cell}", graph_inputs, graph_outputs, inits)


def parity(model: CharRNN, data: bytes, shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES,
           seed: int = 0) -> tuple[float, float]:
    """Largest absolute difference of logits and states between torch and the ONNX bytes, and the
    same relative to the outputs' scale (1 + largest magnitude): an untrained or ReLU model can
    produce huge values on random input, where float32 rounding alone exceeds any absolute bound."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = relative = 0.0
    model = model.eval()
    for batch, steps in shapes:
        tokens = torch.randint(0, model.vocab_size, (batch, steps), generator=generator)
        state = model.zero_state(batch)
        state = tuple(0.5 * torch.randn(s.shape, generator=generator) for s in state) if isinstance(state, tuple) \
            else 0.5 * torch.randn(state.shape, generator=generator)
        with torch.no_grad():
            logits, new_state = model(tokens, state)
        pairs = (state, new_state) if isinstance(state, tuple) else ((state,), (new_state,))
        feeds = {TOKENS_INPUT: tokens.numpy(), **{n: t.numpy() for n, t in zip(state_names(model.cell), pairs[0])}}
        got = session.run(None, feeds)
        expected = [logits.numpy(), *(t.numpy() for t in pairs[1])]
        for g, e in zip(got, expected):
            diff = float(np.abs(g - e).max())
            worst, relative = max(worst, diff), max(relative, diff / (1 + float(np.abs(e).max())))
    return worst, relative


def export_onnx(
    model: CharRNN,
    vocab: Vocabulary,
    path: str | Path,
    *,
    line_items: bool = False,
    training: dict[str, object] | None = None,
) -> dict[str, str]:
    """Write `model` as one .onnx file (atomically) and return its metadata.

    `training` holds facts about the run (corpus, corpus_sha256, val_loss, config, ...); each
    becomes a metadata entry. Raises ParityError if the graph disagrees with torch by more
    than PARITY_TOLERANCE.
    """
    if vocab.size != model.vocab_size:
        raise ValueError(f"vocabulary has {vocab.size} tokens but the model was built for {model.vocab_size}")
    onnx_model = helper.make_model(build_graph(model), opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="seqgen", producer_version=__version__)
    onnx_model.ir_version = 8  # the oldest IR that opset 17 allows: readable by older onnxruntime too
    onnx.checker.check_model(onnx_model)
    data = onnx_model.SerializeToString()
    worst, relative = parity(model, data)
    if not relative <= PARITY_TOLERANCE:
        raise ParityError(f"exported graph differs from torch by {worst:.3g} ({relative:.3g} relative to the "
                          f"outputs' scale; tolerance {PARITY_TOLERANCE})")
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "vocabulary": vocab.to_json(),
        "cell": model.cell,
        "layers": str(model.layers),
        "hidden_size": str(model.hidden_size),
        "embedding_size": str(model.embedding_size),
        "vocab_size": str(model.vocab_size),
        "line_items": "true" if line_items else "false",
        "parameters": str(model.parameter_count),
        **graph_checksums(data),
        PARITY_ABS_KEY: f"{worst:.3g}",
        PARITY_REL_KEY: f"{relative:.3g}",
        "quantization": "none",
        "seqgen_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for key, value in (training or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    write_with_metadata(onnx_model, metadata, path)
    return metadata


def write_with_metadata(onnx_model: onnx.ModelProto, metadata: dict[str, str], path: str | Path) -> None:
    """Replace the model's seqgen metadata, stamp the checksum that covers it, and write it atomically."""
    atomic_write(path, stamped(onnx_model, {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}),
                 replaces=is_seqgen_model, what="seqgen model (.onnx)")


def stamped(onnx_model: onnx.ModelProto, metadata: dict[str, str]) -> bytes:
    """The model's bytes with `metadata` as its seqgen metadata and `file_crc32` over all of it."""
    kept = [p for p in onnx_model.metadata_props if not is_seqgen_key(p.key)]
    del onnx_model.metadata_props[:]
    onnx_model.metadata_props.extend(kept)
    for key, value in metadata.items():
        onnx_model.metadata_props.add(key=stored_key(key), value=value)
    checksum = file_checksum(onnx_model.SerializeToString())
    onnx_model.metadata_props.add(key=stored_key(CHECKSUM_KEY), value=checksum)
    return onnx_model.SerializeToString()


def restamp(path: str | Path, out: str | Path | None = None) -> dict[str, str]:
    """Give a file exported before `file_crc32` existed its checksum, changing nothing else: its graph
    must still match the checksum it was exported with (`graph_crc32` or `graph_sha256`), so a damaged
    file is never blessed. Writes `out` (default: in place, atomically); returns the new metadata."""
    onnx_model = onnx.load(str(path))
    metadata = seqgen_entries((p.key, p.value) for p in onnx_model.metadata_props)
    recorded = {k: metadata[k].lower() for k in GRAPH_CHECKSUM_KEYS if k in metadata}
    actual = graph_checksums(onnx_model.SerializeToString())
    if not recorded or any(actual[k] != v for k, v in recorded.items()):
        raise SeqgenError(f"{path}: its graph does not match a recorded graph checksum, so it cannot be stamped; "
                          "re-export it")
    metadata.pop(CHECKSUM_KEY, None)
    write_with_metadata(onnx_model, metadata, out or path)
    return {**metadata, CHECKSUM_KEY: file_checksum(Path(out or path).read_bytes())}


def is_seqgen_model(path: Path) -> bool:
    """Whether `path` is an ONNX file with seqgen metadata: the only kind of file an export replaces."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError and others: not an ONNX file at all
        return False
    return any(is_seqgen_key(p.key) for p in model.metadata_props)


def load_run_model(run: str | Path) -> tuple[CharRNN, Vocabulary, TrainConfig, dict[str, object]]:
    """The best weights of a run (or a checkpoint file), rebuilt as a CharRNN, with its config as it is read
    today (what an older run's saved fields mean) and the checkpoint."""
    path = checkpoint.run_file(run, checkpoint.BEST)
    saved = checkpoint.load_run(path)
    config = checkpoint.run_config(saved)
    vocab = Vocabulary.from_json(saved["vocab"])
    model = CharRNN(vocab.size, config.cell, config.embedding, config.hidden, config.layers)
    checkpoint.restore(model, saved["model"], path, "it is damaged or edited; restore it or train again")
    return model.eval(), vocab, config, saved


def averaged_weights(run: str | Path, count: int, saved: dict[str, object], like: dict[str, torch.Tensor]
                     ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The mean of the `count` weights a run kept (--keep-checkpoints) whose steps lie nearest its best step
    (`saved`: its best checkpoint), with those steps: averaging the checkpoints about the best smooths out the
    last steps' noise. Each kept file must come from the same corpus and hold the names and shapes of `like`."""
    folder = checkpoint.run_file(run, checkpoint.BEST).parent
    kept = runfolder.kept_files(folder)
    if not kept:
        raise SeqgenError(f"{folder} kept no checkpoints to average; train it with --keep-checkpoints, or export "
                          "without --average")
    if count > len(kept):
        raise SeqgenError(f"--average {count} needs {count} kept checkpoints and {folder} kept {len(kept)}; "
                          f"give at most {len(kept)}")
    around = int(saved["best_step"])  # type: ignore[call-overload]
    steps = sorted(sorted(kept, key=lambda step: (abs(step - around), step))[:count])
    total: dict[str, torch.Tensor] = {}
    for step in steps:
        payload = checkpoint.load(kept[step])
        weights = payload.get("model")
        if (not weights or payload.get("corpus") != saved["corpus"]
                or weights.keys() != like.keys()  # type: ignore[union-attr]
                or any(weights[name].shape != tensor.shape for name, tensor in like.items())):  # type: ignore[index]
            raise SeqgenError(f"{kept[step]} holds no weights of this run; remove it, or export without --average")
        if not all(torch.isfinite(tensor).all() for tensor in weights.values()):  # type: ignore[union-attr]
            raise SeqgenError(f"{kept[step]} holds weights that are not finite (a damaged or edited file), which would "
                              "make the average NaN; remove it, or export without --average")
        for name, tensor in weights.items():  # type: ignore[union-attr]
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (tensor / len(steps)).float() for name, tensor in total.items()}, steps


def export_run(run: str | Path, out: str | Path, *, seconds: float | None = None, average: int = 1) -> Path:
    """Export a run's best weights to one .onnx file, with the training facts in its metadata; with `average`
    above 1, the mean of that many kept checkpoints' weights about the best step instead."""
    model, vocab, config, saved = load_run_model(run)
    corpus = saved["corpus"]
    averaged: dict[str, object] = {}
    if average > 1:
        weights, steps = averaged_weights(run, average, saved, model.state_dict())
        model.load_state_dict(weights)  # names and shapes were checked file by file
        averaged = {"averaged_steps": steps}
    training = {
        "corpus": corpus["name"],
        "corpus_sha256": corpus["sha256"],
        "val_loss": round(float(saved["best_val"]), 5),
        "val_accuracy": round(float(saved["best_accuracy"]), 5),
        "best_step": int(saved["best_step"]),
        "training": {"config": config.to_dict(), "seconds": round(seconds if seconds is not None
                                                                else float(saved["elapsed"]), 1),
                     "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}"},
        **averaged,
    }
    export_onnx(model, vocab, out, line_items=bool(corpus["line_items"]), training=training)
    return Path(out)
