"""seqgen.train: train character models in PyTorch and export them to seqgen's ONNX model file.

Needs the `train` extra (torch, onnx). The runtime (`seqgen`) never imports this package.

    from seqgen.train import TrainConfig, train
    result = train(TrainConfig(corpus=["input.txt"], cell="lstm", hidden=256, out="runs/shakespeare"))
"""

from __future__ import annotations

from .config import TrainConfig
from .export import export_onnx
from .loop import Result, export_run, fit_texts, train
from .models import CharRNN

__all__ = ["CharRNN", "Result", "TrainConfig", "export_onnx", "export_run", "fit_texts", "train"]
