"""seqgen.train: train character models in PyTorch and export them to seqgen's ONNX model file.

Needs the `train` extra (torch, onnx). The runtime (`seqgen`) never imports this package.
"""

from __future__ import annotations

from .export import export_onnx
from .models import CharRNN

__all__ = ["CharRNN", "export_onnx"]
