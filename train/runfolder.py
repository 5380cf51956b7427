"""Run folders: the files that make a run, and the rule that a new run never destroys an old one.

A new run in a folder that holds a run is refused unless asked to overwrite it; even then the old run's
files stay until the new run saves its first checkpoint, so a run that fails early loses nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from seqgen.errors import SeqgenError

from . import checkpoint
from .files import reported

try:
    import fcntl
except ImportError:  # Windows: no flock, the folder is not held
    fcntl = None  # type: ignore[assignment]

METRICS, MODEL, PLOT = "metrics.jsonl", "model.onnx", "loss.png"
RUN_FILES = (checkpoint.LATEST, checkpoint.BEST, MODEL, METRICS, PLOT)
"""What a run writes in its folder; any of them there means the folder holds a run."""
KEPT = "kept"
"""The folder of a run's kept weights (--keep-checkpoints), one file per checkpoint, named by kept_name."""


def kept_name(step: int) -> str:
    return f"step-{step:07d}.pt"


def kept_files(out: Path) -> dict[int, Path]:
    """The weights a run kept, by step; only files named as the run names them."""
    folder = out / KEPT
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.glob("step-*.pt"):
        number = path.stem.removeprefix("step-")
        if number.isdigit() and path.name == kept_name(int(number)) and path.is_file():
            found[int(number)] = path
    return found


def keep(out: Path, step: int, weights: dict[str, object], corpus: dict[str, object]) -> None:
    """Keep a checkpoint's weights as RUN/kept/step-N.pt (--keep-checkpoints), for export --average; the
    corpus they were trained on goes with them, so that an export averages only this run's."""
    with reported(out / KEPT):
        (out / KEPT).mkdir(exist_ok=True)
    checkpoint.save(out / KEPT / kept_name(step), {"step": step, "model": weights, "corpus": corpus})


def previous_run(out: Path, *, overwrite: bool) -> list[str]:
    """The files of a run already in `out`, which a new run replaces at its first checkpoint; without
    `overwrite` a folder that holds a run is refused (nothing is changed)."""
    if out.exists() and not out.is_dir():
        raise SeqgenError(f"--out {out} is a file, not a folder; give a folder for the run")
    found = [name for name in RUN_FILES if (out / name).is_file()] + ([KEPT] if kept_files(out) else [])
    if found and not overwrite:
        raise SeqgenError(f"{out} already holds a run ({', '.join(found)}); continue it with --resume {out} (from "
                          "Python: resume=True), replace it with --overwrite (overwrite=True; its files stay until "
                          "the new run saves its first checkpoint), or choose another --out")
    return found


def retire(out: Path, names: list[str], keep: str) -> None:
    """Remove an old run's files once the new run has saved `keep` (which replaced its namesake)."""
    for name in names:
        if name == KEPT:  # only the files the old run kept; anything else put there stays
            for path in kept_files(out).values():
                with reported(path):
                    path.unlink(missing_ok=True)
        elif name != keep:
            with reported(out / name):
                (out / name).unlink(missing_ok=True)


@contextlib.contextmanager
def held(out: Path) -> Iterator[None]:
    """Make the run folder and hold it (an flock on the folder, released when the process ends however it
    ends) while this process trains or exports into it: a resume, an --overwrite or an export into the folder
    started while a run still trains there is refused before it changes anything, instead of interleaving its
    files with the run's."""
    with reported(out):
        out.mkdir(parents=True, exist_ok=True)
        folder = os.open(out, os.O_RDONLY)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SeqgenError(f"{out} is in use by another seqgen-train process; wait for it to finish (or stop "
                                  f"it), then try again, or choose another --out") from None
        yield
    finally:
        os.close(folder)
