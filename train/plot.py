"""Loss curves of a run (metrics.jsonl) drawn to a PNG."""

from __future__ import annotations

from pathlib import Path

from seqgen.errors import SeqgenError

from .files import atomic_write, read_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def plot_run(run: Path, out: Path | None = None) -> Path:
    """Training and validation loss against step; returns the PNG's path."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise SeqgenError(f"{run} has no metrics.jsonl; give a run folder made by seqgen-train fit")
    rows = [record for _, record in read_jsonl(metrics)]
    if not rows:
        raise SeqgenError(f"{metrics} is empty; the run has not reached its first evaluation yet")
    steps = [r["step"] for r in rows]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(steps, [r["train_loss"] for r in rows], label="train")
    axes.plot(steps, [r["val_loss"] for r in rows], label="validation")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per character)")
    axes.set_title(run.name)
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    out = out or run / "loss.png"
    atomic_write(out, buffer.getvalue(), replaces=is_png, what="PNG image")
    return out


def is_png(path: Path) -> bool:
    """Whether `path` starts with PNG's signature: the only kind of file a plot replaces."""
    with path.open("rb") as handle:
        return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
