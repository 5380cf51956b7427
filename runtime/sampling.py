"""Choosing the next character from logits: temperature, top-k, top-p, min-p, repetition penalty.

The names follow llama.cpp. Order: repetition penalty, then temperature, then top-k, min-p and
top-p on the tempered distribution (so they cut the distribution actually sampled from).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import SeqgenError

GREEDY_BELOW = 1e-30
"""Temperatures below this pick the most likely token, as temperature 0 does."""
PENALTY_WINDOW = 64
"""How many recent tokens (prompt and generated) the repetition penalty looks at."""


@dataclass(frozen=True)
class Sampling:
    """Validated sampling options. temperature 0 is greedy (argmax)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        t = self.temperature
        if not isinstance(t, (int, float)) or math.isnan(t) or t < 0 or math.isinf(t):
            raise SeqgenError(f"temperature must be a finite number >= 0 (0 is greedy), got {t!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise SeqgenError(f"top_k must be an integer >= 1 (values above the vocabulary size keep all), "
                              f"got {self.top_k!r}")
        for name in ("top_p", "min_p"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise SeqgenError(f"{name} must be in (0, 1], got {value!r}")
        r = self.repetition_penalty
        if not isinstance(r, (int, float)) or math.isnan(r) or r <= 0 or math.isinf(r):
            raise SeqgenError(f"repetition_penalty must be a finite number > 0 (1 is off), got {r!r}")

    @property
    def greedy(self) -> bool:
        """Temperature 0, or one so small that sampling from it is greedy anyway (no overflow)."""
        return self.temperature < GREEDY_BELOW


FLOAT32_MAX = float(np.finfo(np.float32).max)


def penalize(logits: np.ndarray, recent: np.ndarray, penalty: float) -> None:
    """In place: make tokens in `recent` ([batch, window] ids) less likely (llama.cpp's rule).

    Results stay finite (an extreme penalty must not turn a candidate into +-inf); masked tokens
    (-inf) stay masked.
    """
    rows = np.arange(logits.shape[0])[:, None]
    picked = logits[rows, recent].astype(np.float64)
    changed = np.clip(np.where(picked > 0, picked / penalty, picked * penalty), -FLOAT32_MAX, FLOAT32_MAX)
    logits[rows, recent] = np.where(np.isneginf(picked), picked, changed)


def choose(logits: np.ndarray, options: Sampling, rng: np.random.Generator) -> np.ndarray:
    """Token ids ([batch] int64) drawn from `logits` ([batch, vocab]).

    Only the work an option needs is done: top_k keeps the k best candidates (unsorted), top_p
    sorts them so its cut is a prefix. Array methods and plain indexing keep the cost to a few
    microseconds at batch 1 (np.take_along_axis alone would cost more than all of it).
    """
    if options.greedy:
        return logits.argmax(axis=1)
    batch, width = logits.shape
    rows = np.arange(batch)[:, None]
    k = min(options.top_k or width, width)
    top_p = options.top_p is not None and options.top_p < 1
    candidates = logits.argpartition(width - k, axis=1)[:, width - k :] if k < width else None
    if top_p:
        order = (-(logits if candidates is None else logits[rows, candidates])).argsort(axis=1)
        candidates = order if candidates is None else candidates[rows, order]
    scores = logits if candidates is None else logits[rows, candidates]
    # float64, so that no valid temperature overflows (or rounds to 0) in the division; the best weighs 1
    probs = np.exp((scores - scores.max(axis=1, keepdims=True)).astype(np.float64) / options.temperature)
    if options.min_p is not None:
        probs[probs < options.min_p] = 0.0
    cumulative = probs.cumsum(axis=1)
    if top_p:  # keep the smallest prefix whose mass reaches top_p of the total (the best always stays)
        drop = (cumulative - probs) >= options.top_p * cumulative[:, -1:]
        drop[:, 0] = False
        probs[drop] = 0.0
        cumulative = probs.cumsum(axis=1)
    threshold = rng.random(batch) * cumulative[:, -1]
    picks = np.minimum((cumulative <= threshold[:, None]).sum(axis=1), probs.shape[1] - 1)
    return picks if candidates is None else candidates[rows[:, 0], picks]
