"""Dynamic int8 quantization of an exported model, with its size and agreement with the float model."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

import seqgen
from seqgen.errors import SeqgenError
from seqgen.modelfile import PARITY_ABS_KEY, PARITY_REL_KEY, graph_checksums, seqgen_entries

from .export import write_with_metadata

AGREEMENT_CHARS = 4000
ITEM_CHARS, MIN_RELU_ROW = 200, 8
"""Longest row of an agreement sample drawn in rows, and the shortest a ReLU model's rows are halved to."""


def top1_agreement(reference: seqgen.Model, candidate: seqgen.Model, chars: int = AGREEMENT_CHARS,
                   seed: int = 0) -> tuple[float, int]:
    """Fraction of positions, along text sampled from `reference`, where both models rank the same
    character first; and the number of positions compared."""
    agree = positions = 0
    for ids in _samples(reference, chars, seed):
        picks = [np.concatenate([logits.argmax(-1) for logits in model.session().chunk_logits(ids[None, :])],
                                axis=1) for model in (reference, candidate)]
        agree += int((picks[0] == picks[1]).sum())
        positions += picks[0].size
    return agree / positions, positions


def _samples(reference: seqgen.Model, chars: int, seed: int) -> list[np.ndarray]:
    """About `chars` characters sampled from `reference`, as rows each compared from a fresh state.

    A running-text model with a bounded state writes one long row. Otherwise rows come 64 at a time: a
    line-item model's end at the end of an item (at most ITEM_CHARS), and a ReLU model's state may overflow on
    long texts (the alphabet model's at ~80 characters), so its rows are halved until they fit."""
    if not reference.line_items and reference.graph.bounded:
        return [reference.vocab.encode(reference.generate("", chars, temperature=1.0, seed=seed))]
    length = ITEM_CHARS if reference.line_items else min(chars, ITEM_CHARS)
    while True:
        try:
            return _rows(reference, chars, length, seed)
        except SeqgenError:  # a ReLU state overflowed: shorter rows
            if reference.graph.bounded or length <= MIN_RELU_ROW:
                raise
            length //= 2


def _rows(reference: seqgen.Model, chars: int, length: int, seed: int) -> list[np.ndarray]:
    """Rows of at most `length` characters, 64 seeded ones at a time, until they hold `chars` (ends included)."""
    rows: list[np.ndarray] = []
    total = 0
    while total < chars:
        for text in reference.generate_batch([""] * 64, length, temperature=1.0, seed=seed + len(rows)):
            rows.append(reference.vocab.encode(text))
            total += len(rows[-1]) + 1
    return rows


def quantize_int8(source: str | Path, out: str | Path) -> dict[str, object]:
    """Write `source` with int8 weights (onnxruntime dynamic quantization) to `out`; report the gain.

    onnxruntime has int8 kernels for LSTM and MatMul; GRU and RNN layers stay float and only the
    output layer is quantized (see docs/performance.md for the measured effect).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, out = Path(source), Path(out)
    reference = seqgen.load(source)
    float_bytes = source.stat().st_size
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder) / "int8.onnx"
        with _quiet_root_logger():
            quantize_dynamic(source, staged, weight_type=QuantType.QInt8)
        quantized = onnx.load(staged)
        # the float file's facts, less the float graph's parity (the int8 graph's own check is its agreement)
        metadata = {k: v for k, v in seqgen_entries(reference.file.metadata.items()).items()
                    if k not in (PARITY_ABS_KEY, PARITY_REL_KEY)}
        metadata.update(quantization="int8", **graph_checksums(quantized.SerializeToString()),
                        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_with_metadata(quantized, metadata, staged)  # measured here: `out` is written once, when it is whole
        agreement, positions = top1_agreement(reference, seqgen.load(staged))
    metadata["int8_top1_agreement"] = f"{agreement:.4f}"
    write_with_metadata(quantized, metadata, out)
    return {"quantized": str(out), "float_bytes": float_bytes, "int8_bytes": out.stat().st_size,
            "size_ratio": round(out.stat().st_size / float_bytes, 3), "top1_agreement": round(agreement, 4),
            "top1_positions": positions}


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Hide the WARNING:root lines onnxruntime.quantization logs (advice on pre-processing, the int64
    token input it cannot quantize). A NullHandler keeps logging.warning() from installing a stderr
    handler on the root logger for good (its basicConfig fallback)."""
    root = logging.getLogger()
    level, quiet = root.level, logging.NullHandler()
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)
