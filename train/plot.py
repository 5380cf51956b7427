"""Loss curves of a run (metrics.jsonl) drawn to a PNG."""

from __future__ import annotations

from pathlib import Path

from seqgen.errors import SeqgenError

from .files import atomic_write, finite_number, read_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def plot_run(run: Path, out: Path | None = None) -> Path:
    """Training and validation loss against step and against wall-clock minutes; returns the PNG's path.

    The training curve is the loss logged every few steps (`--log-every`); runs that logged it only at
    evaluations are drawn from those."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise SeqgenError(f"{run} has no metrics.jsonl; give a run folder made by seqgen-train fit")
    fields = ("step", "elapsed", "train_loss")  # a record lacking one (hand-edited, foreign) is passed over
    rows = [r for _, r in read_jsonl(metrics) if all(finite_number(r.get(k)) for k in fields)]
    evaluations = [r for r in rows if finite_number(r.get("val_loss"))]
    training = [r for r in rows if "val_loss" not in r] or evaluations
    if not training and not metrics.read_text(encoding="utf-8", errors="replace").strip():
        raise SeqgenError(f"{metrics} is empty; the run has not logged its first steps yet")
    if not training:
        raise SeqgenError(f"{metrics} holds no record with a finite step, elapsed and train_loss; it was not "
                          "written by seqgen-train fit: plot a run folder that fit made")
    figure, panels = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axes, key, label, scale in ((panels[0], "step", "step", 1), (panels[1], "elapsed", "minutes", 60)):
        axes.plot([r[key] / scale for r in training], [r["train_loss"] for r in training], label="train",
                  linewidth=1)
        if evaluations:
            axes.plot([r[key] / scale for r in evaluations], [r["val_loss"] for r in evaluations],
                      label="validation", marker="o", markersize=3)
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("loss (nats per character)")
    panels[0].legend()
    figure.suptitle(run.name)
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
