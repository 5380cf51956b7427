"""Held-out evaluation through the runtime: the figures a model card reports."""

from __future__ import annotations

from pathlib import Path

import seqgen
from seqgen import checks
from seqgen.errors import SeqgenError

from .config import DEFAULT_VAL_FRACTION, TEXT_ONLY_SPLIT
from .data import item_split, read_corpus, text_split


def held_out_text(text: str, *, line_items: bool, val_fraction: float = 0.1, seed: int = 1337) -> str:
    """The held-out part of a corpus, split as training split it (nanoGPT's tail or makemore's items)."""
    if not line_items:
        return text[text_split(len(text), val_fraction) :]
    items = [line for line in text.splitlines() if line]
    if len(items) < 2:
        raise SeqgenError("the corpus has fewer than 2 items; nothing is held out")
    return "\n".join(items[i] for i in item_split(len(items), seed)[1])


def model_held_out_text(model: seqgen.Model, text: str, *, val_fraction: float | None = None,
                        seed: int | None = None, lines: bool | None = None) -> str:
    """The held-out part of `text` for `model`: split as its training run split it (fraction and seed from
    its metadata) unless told otherwise; options that would not apply to the split are refused."""
    trained = model.info.get("training", {})
    config = trained.get("config", {}) if isinstance(trained, dict) else {}
    line_items = model.file.line_items if lines is None else lines
    if line_items and val_fraction is not None:
        raise SeqgenError(TEXT_ONLY_SPLIT)
    seed = checks.seed(seed, "--seed")  # as training's seeds: numpy's generator refuses negatives
    if not line_items and seed is not None:
        raise SeqgenError("--seed picks the held-out items of a line-item model; running text holds out its last "
                          "fraction (--val-fraction), which no seed changes; drop --seed")
    return held_out_text(text, line_items=line_items,
                         val_fraction=val_fraction or config.get("val_fraction") or DEFAULT_VAL_FRACTION,
                         seed=seed if seed is not None else config.get("seed", 1337))


def held_out_score(model: str | Path, corpus: list[str], *, val_fraction: float | None = None,
                   seed: int | None = None, lines: bool | None = None) -> dict[str, object]:
    """Score `model` (.onnx file or run folder) on the held-out split of `corpus` with the runtime.

    The split's fraction and seed default to those the model was trained with (its metadata).
    """
    path = Path(model)
    loaded = seqgen.load(path / "model.onnx" if path.is_dir() else path)
    text, sha = read_corpus(corpus)
    held_out = model_held_out_text(loaded, text, val_fraction=val_fraction, seed=seed, lines=lines)
    score = loaded.score(held_out)
    line_items = loaded.file.line_items if lines is None else lines
    return {"model": str(loaded.path), "corpus_sha256": sha, "line_items": line_items, "tokens": score.tokens,
            "loss": round(score.loss, 4), "bits_per_char": round(score.bits_per_char, 4),
            "perplexity": round(score.perplexity, 3), "accuracy": round(score.accuracy, 4)}
