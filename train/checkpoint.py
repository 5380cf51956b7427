"""Checkpoints: everything an exact resume needs, in plain tensors and numbers (weights_only loading)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from seqgen.errors import SeqgenError

from .files import atomic_write

FORMAT = 1
LATEST, BEST = "checkpoint.pt", "best.pt"


def save(path: str | Path, payload: dict[str, object]) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous one intact."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write(path, buffer.getvalue())


def load(path: str | Path) -> dict[str, object]:
    """Read a checkpoint with weights_only=True; a corrupt or foreign file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise SeqgenError(f"no checkpoint at {path}; give a run folder made by seqgen-train fit")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise SeqgenError(f"checkpoint {path} is damaged or not a seqgen checkpoint "
                          f"({type(exc).__name__}); start a new run or restore the file") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SeqgenError(f"{path} is not a seqgen checkpoint of format {FORMAT}; start a new run")
    return payload


def run_file(run: str | Path, name: str) -> Path:
    """A file of a run folder, with a clear error when the folder is not a run."""
    run = Path(run)
    if run.is_file():
        return run
    if not (run / name).is_file():
        raise SeqgenError(f"{run} holds no {name}; give a run folder made by seqgen-train fit")
    return run / name
