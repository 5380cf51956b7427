"""Do simple RNNs lose long-range information where LSTM and GRU keep it? A measurement.

The seed notebook ends by claiming so; this task tests it. Each sequence is a key (one of 8
letters), then N distractor digits, then "?": the model must answer the key. Chance is 1/8.
Every cell gets the same parameter budget, the same data and the same number of steps; accuracy
is measured through the runtime on held-out sequences.

    python benchmarks/long_range.py [--distances 5 10 20 40 70 100] [--seeds 0 1 2] [--steps 2000] [--out docs]
    python benchmarks/long_range.py --cells lstm --forget-bias 1 --reuse docs/long-range.json --out docs
    python benchmarks/long_range.py --report-only --reuse docs/long-range.json --out docs

Rows are labelled by cell, and LSTM rows also by their starting forget-gate bias ("torch" for torch's
initialisation); `--reuse` keeps an earlier run's rows of other labels, so one table compares them.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

import seqgen
from seqgen.cells import CELLS, NAMES
from seqgen.train import CharRNN, fit_texts
from seqgen.train.loop import TrainingDiverged

KEYS, NOISE = "abcdefgh", "0123456789"
EMBEDDING = 8


def sequences(count: int, distance: int, rng: random.Random) -> list[tuple[str, str]]:
    """(key + N digits + '?', key) pairs."""
    pairs = []
    for _ in range(count):
        key = rng.choice(KEYS)
        pairs.append((key + "".join(rng.choice(NOISE) for _ in range(distance)) + "?", key))
    return pairs


def hidden_for_budget(cell: str, budget: int, vocab_size: int) -> int:
    """The hidden size whose one-layer CharRNN comes closest to `budget` parameters."""
    return min(range(4, 512), key=lambda h: abs(CharRNN(vocab_size, cell, EMBEDDING, h, 1).parameter_count - budget))


def accuracy(model_path: Path, test: list[tuple[str, str]]) -> float:
    model = seqgen.load(model_path)
    answers = model.predict_batch([source for source, _ in test], k=1)
    return sum(top[0][0] == key for top, (_, key) in zip(answers, test)) / len(test)


def label(row: dict[str, object]) -> str:
    """A row's column: the cell, and for an LSTM its starting forget-gate bias (rows without one used torch's)."""
    if CELLS[row["cell"]].forget_gate is None:
        return str(row["cell"])
    bias = row.get("forget_bias")
    return f"{row['cell']} (forget bias {'torch' if bias is None else f'{bias:g}'})"


def run(distance: int, cell: str, seed: int, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    rng = random.Random(distance * 1000 + seed)
    train_pairs, test_pairs = sequences(args.train, distance, rng), sequences(args.test, distance, rng)
    vocab_size = len(KEYS + NOISE + "?") + 1
    hidden = hidden_for_budget(cell, args.budget, vocab_size)
    started = time.monotonic()
    out = folder / f"{cell}-{distance}-{seed}"
    try:
        result = fit_texts(train_pairs, out, cell=cell, layers=1, hidden=hidden, embedding=EMBEDDING,
                           batch_size=64, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=100,
                           max_steps=args.steps,
                           eval_every=args.steps, samples=0, progress=False, seed=seed, threads=1,
                           forget_bias=args.forget_bias)
        score = accuracy(result.model_path, test_pairs)
    except TrainingDiverged:
        score = float("nan")
    parameters = CharRNN(vocab_size, cell, EMBEDDING, hidden, 1).parameter_count
    forget_bias = None if CELLS[cell].forget_gate is None else args.forget_bias
    return {"distance": distance, "cell": cell, "forget_bias": forget_bias,
            "seed": seed, "hidden": hidden, "parameters": parameters, "accuracy": score,
            "seconds": round(time.monotonic() - started, 1)}


def summary(rows: list[dict[str, object]], distance: int, column: str) -> tuple[float, float, float] | None:
    """Mean, worst and best held-out accuracy over seeds (a diverged run counts as chance); None if not run."""
    scores = [r["accuracy"] if r["accuracy"] == r["accuracy"] else 1 / len(KEYS)
              for r in rows if r["distance"] == distance and label(r) == column]
    return (sum(scores) / len(scores), min(scores), max(scores)) if scores else None


def write_report(rows: list[dict[str, object]], columns: list[str], args: argparse.Namespace, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for column in columns:
        mine = [r for r in rows if label(r) == column]
        distances = [d for d in args.distances if summary(rows, d, column)]
        stats = [summary(rows, d, column) for d in distances]
        axes.errorbar(distances, [s[0] for s in stats], yerr=[[s[0] - s[1] for s in stats],
                      [s[2] - s[0] for s in stats]], marker="o", capsize=3,
                      label=f"{column} (H={mine[0]['hidden']}, {mine[0]['parameters']} params)")
    axes.axhline(1 / len(KEYS), color="grey", linestyle=":", label="chance")
    axes.set_xlabel("distance N between the key and the question")
    axes.set_ylabel(f"held-out accuracy (mean, min-max over {len(args.seeds)} seeds)")
    axes.set_ylim(0, 1.05)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.savefig(out / "long-range.png", dpi=100, bbox_inches="tight")
    (out / "long-range.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    print(f"wrote {out / 'long-range.png'} and {out / 'long-range.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distances", type=int, nargs="+", default=[5, 10, 20, 40, 70, 100])
    parser.add_argument("--cells", nargs="+", default=list(NAMES), choices=NAMES)
    parser.add_argument("--budget", type=int, default=10_000, help="parameters per model")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's, on every weight and bias")
    parser.add_argument("--train", type=int, default=4000, help="training sequences per distance")
    parser.add_argument("--test", type=int, default=500, help="held-out sequences per distance")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--forget-bias", type=float, default=1.0, help="LSTM forget-gate bias at the start")
    parser.add_argument("--reuse", type=Path, help="an earlier long-range.json whose rows of other labels to keep")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the --reuse file's rows")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for distance in [] if args.report_only else args.distances:
            for cell in args.cells:
                for seed in args.seeds:
                    rows.append(run(distance, cell, seed, args, Path(tmp)))
                    print(json.dumps(rows[-1]), flush=True)
    if args.reuse:
        fresh = {label(r) for r in rows}
        rows = [r for r in json.loads(args.reuse.read_text())["rows"] if label(r) not in fresh] + rows
    args.distances = sorted({int(r["distance"]) for r in rows})  # run in any order, reported in order
    columns = list(dict.fromkeys(label(r) for r in rows))
    print("\n| N | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for distance in args.distances:
        cells = [summary(rows, distance, c) for c in columns]
        print(f"| {distance} | " + " | ".join("{:.2f} ({:.2f}-{:.2f})".format(*s) if s else "-" for s in cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(rows, columns, args, args.out)


if __name__ == "__main__":
    main()
