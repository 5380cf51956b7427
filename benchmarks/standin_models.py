"""Untrained models of the performance issue's table sizes, to run bench_runtime.py on beside the default.

    python benchmarks/standin_models.py OUT_DIR [--hidden 128 256 512]

Writes OUT_DIR/lstm-h{H}.onnx for each H: a 2-layer LSTM, embedding 32, 79 characters plus the boundary
(80 token ids), random weights (a step costs the same whatever the weights hold). Needs the train extra.
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import torch

from seqgen.train.export import export_onnx
from seqgen.train.models import CharRNN
from seqgen.vocab import Vocabulary

CHARACTERS = string.ascii_letters + string.digits + " .,;:!?'\"-()&*[]\n"  # 79


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the .onnx files")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512], help="hidden sizes [128 256 512]")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary.fit([CHARACTERS], order="codepoint")
    torch.manual_seed(0)
    for hidden in args.hidden:
        model = CharRNN(vocab.size, "lstm", embedding_size=32, hidden_size=hidden, layers=2).eval()
        path = args.out / f"lstm-h{hidden}.onnx"
        export_onnx(model, vocab, path)
        print(f"{path}: {path.stat().st_size:,} bytes, vocabulary {vocab.size}")


if __name__ == "__main__":
    main()
