"""Dynamic int8 quantization of an exported model, with its size and agreement with the float model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

import seqgen
from seqgen.modelfile import PREFIX, graph_sha256

from .export import write_with_metadata

AGREEMENT_CHARS = 4000


def top1_agreement(reference: seqgen.Model, candidate: seqgen.Model, chars: int = AGREEMENT_CHARS,
                   seed: int = 0) -> float:
    """Fraction of positions, along text sampled from `reference`, where both models rank the same
    character first."""
    text = reference.generate("", chars, temperature=1.0, seed=seed)
    ids = reference.vocab.encode(text)[None, :]
    picks = [np.concatenate([logits.argmax(-1) for logits in model.session().chunk_logits(ids)], axis=1)
             for model in (reference, candidate)]
    return float((picks[0] == picks[1]).mean())


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
        quantize_dynamic(source, staged, weight_type=QuantType.QInt8)
        quantized = onnx.load(staged)
    metadata = dict(reference.file.metadata)
    metadata = {k.removeprefix(PREFIX): v for k, v in metadata.items()}
    metadata["quantization"] = "int8"
    metadata["graph_sha256"] = graph_sha256(quantized.SerializeToString())
    write_with_metadata(quantized, metadata, out)
    candidate = seqgen.load(out)
    agreement = top1_agreement(reference, candidate)
    return {"quantized": str(out), "float_bytes": float_bytes, "int8_bytes": out.stat().st_size,
            "size_ratio": round(out.stat().st_size / float_bytes, 3), "top1_agreement": round(agreement, 4)}
