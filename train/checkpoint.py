"""Checkpoints: everything an exact resume needs, in plain tensors and numbers (weights_only loading).

A checkpoint is checked whole when it is read: a damaged, foreign or hand-edited file (`{"format": 1}`,
a step that is text, a config that is not a config) is one clear error, never a KeyError or TypeError
half-way through a resume or an export.
"""

from __future__ import annotations

import io
import numbers
from pathlib import Path

import torch

from seqgen.errors import SeqgenError
from seqgen.vocab import Vocabulary

from .config import TrainConfig
from .files import atomic_write

FORMAT = 1
LATEST, BEST = "checkpoint.pt", "best.pt"

_COUNTS = ("step", "epoch", "batch_in_epoch", "best_step", "bad_evals")
_FIGURES = ("elapsed", "best_val", "best_accuracy")
_LATER_FIGURES = ("train_accuracy",)
"""Figures checkpoints hold since a later version: checked where present, not required."""
_TABLES = ("config", "corpus", "model", "optimizer")


def save(path: str | Path, payload: dict[str, object]) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous one intact."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write(path, buffer.getvalue())


def load_run(path: str | Path) -> dict[str, object]:
    """A checkpoint with every part that a resume and an export read; anything missing is one clear error."""
    payload = load(path)
    missing = [key for key in (*_TABLES, "vocab", "rngs", *_COUNTS, *_FIGURES) if key not in payload]
    if missing:
        raise SeqgenError(f"checkpoint {path} is damaged or not a seqgen checkpoint (missing {', '.join(missing)}); "
                          "start a new run or restore the file")
    return payload


def run_config(saved: dict[str, object], **changes: object) -> TrainConfig:
    """A checkpoint's config, with `changes`, as it is read today: a fit_texts run of strings saved before it
    recorded lines=True (with running text's seq_len 128 and val_fraction 0.1) reads as the line-item run its
    corpus says it is, so a resume or an export does not write those into the model."""
    config = {**saved["config"], **changes}  # type: ignore[dict-item]
    if saved["corpus"]["line_items"] and not config.get("lines"):  # type: ignore[index]
        config.update(lines=True, seq_len=None, val_fraction=None)
    return TrainConfig.from_dict(config)


def load(path: str | Path) -> dict[str, object]:
    """Read a checkpoint with weights_only=True and check each part it holds; a corrupt, foreign or
    malformed file is one clear error (load_run also requires every part)."""
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
    problem = _problem(payload)
    if problem:
        raise SeqgenError(f"checkpoint {path} is damaged or not a seqgen checkpoint ({problem}); start a new run "
                          "or restore the file")
    return payload


def _problem(payload: dict[str, object]) -> str:
    """What is malformed among the parts a checkpoint's payload holds, or "" when each is what a resume and
    an export read."""
    for key in _TABLES:
        if key in payload and not isinstance(payload[key], dict):
            return f"its {key} is not a table"
    for key in _COUNTS:
        if key in payload and (isinstance(payload[key], bool) or not isinstance(payload[key], int)
                               or payload[key] < 0):  # type: ignore[operator]
            return f"its {key} is not a count"
    for key in (*_FIGURES, *_LATER_FIGURES):
        if key in payload and (isinstance(payload[key], bool) or not isinstance(payload[key], numbers.Real)):
            return f"its {key} is not a number"
    corpus = payload.get("corpus", {"name": "", "sha256": "", "line_items": False})
    if not (isinstance(corpus.get("name"), str) and isinstance(corpus.get("sha256"), str)  # type: ignore[union-attr]
            and isinstance(corpus.get("line_items"), bool)):  # type: ignore[union-attr]
        return "its corpus is not a name, a sha256 and a line_items flag"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.get("model", {}).items()):  # type: ignore[union-attr]
        return "its model is not a table of tensors"
    if "rngs" in payload and not _rng_states(payload):
        return "its random generator states are malformed"
    try:
        if "config" in payload:
            TrainConfig.from_dict(payload["config"])  # type: ignore[arg-type]
        if "vocab" in payload:
            Vocabulary.from_json(payload["vocab"])  # type: ignore[arg-type]
    except (SeqgenError, TypeError, RecursionError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return ""


def _rng_states(payload: dict[str, object]) -> bool:
    """Generator states as a resume restores them: `rngs`, one (cpu, device or None) pair per rank."""
    def state(value: object) -> bool:
        return isinstance(value, torch.Tensor) and value.dtype == torch.uint8

    states = payload["rngs"]
    return isinstance(states, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and state(pair[0]) and (pair[1] is None or state(pair[1]))
        for pair in states)


def restore(target: torch.nn.Module | torch.optim.Optimizer, state: dict[str, object], path: Path, fix: str) -> None:
    """Load saved weights (or optimiser state) into `target`; a mismatch is one error naming the file."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise SeqgenError(f"checkpoint {path} does not fit this model ({str(exc).splitlines()[0]}); {fix}") from None


def run_file(run: str | Path, name: str) -> Path:
    """A file of a run folder, with a clear error when the folder is not a run."""
    run = Path(run)
    if run.is_file():
        return run
    if not (run / name).is_file():
        raise SeqgenError(f"{run} holds no {name}; give a run folder made by seqgen-train fit")
    return run / name
