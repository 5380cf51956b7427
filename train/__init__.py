"""seqgen.train: train character models in PyTorch and export them to seqgen's ONNX model file.

Needs the `train` extra (torch, onnx). The runtime (`seqgen`) never imports this package.

    from seqgen.train import TrainConfig, train
    result = train(TrainConfig(corpus=["input.txt"], cell="lstm", hidden=256, out="runs/shakespeare"))
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig
    from .export import export_onnx, export_run
    from .loop import Result, fit_texts, train
    from .models import CharRNN

__all__ = ["CharRNN", "Result", "TrainConfig", "export_onnx", "export_run", "fit_texts", "train"]

# Imported on first use, so that `seqgen-train --help`, `eval` and `plot` do not wait for torch.
_LAZY = {"TrainConfig": "config", "export_onnx": "export", "Result": "loop", "export_run": "export",
         "fit_texts": "loop", "train": "loop", "CharRNN": "models"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'seqgen.train' has no attribute {name!r}")
