"""Epochs the seed notebook's presets need to reach training accuracy 1.0, over several seeds.

    python benchmarks/alphabet_epochs.py [--seeds 10]

Trains each preset with an evaluation after every epoch (one step: the whole set is one batch)
and prints the first epoch at which every next character of the training set is predicted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from seqgen.train import TrainConfig, train
from seqgen.train.presets import PRESETS, preset_options


def epochs_to_perfect(preset: str, seed: int, folder: Path) -> int | None:
    options = {**preset_options(preset), "eval_every": 1, "seed": seed, "progress": False}
    train(TrainConfig(out=str(folder / f"{preset}-{seed}"), **options))
    for line in (folder / f"{preset}-{seed}" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("val_accuracy") == 1.0:  # the preset evaluates on its own training set
            return int(record["step"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            reached = [epochs_to_perfect(preset, seed, Path(tmp)) for seed in range(args.seeds)]
            done = [r for r in reached if r is not None]
            print(f"{preset}: epochs to training accuracy 1.0 per seed {reached}; "
                  f"reached {len(done)}/{len(reached)}, median {statistics.median(done) if done else '-'}, "
                  f"max {max(done) if done else '-'}")


if __name__ == "__main__":
    main()
