"""Choosing the next character from logits: temperature, top-k, top-p, min-p, repetition penalty.

The names follow llama.cpp. Order: repetition penalty, then temperature, then top-k, min-p and
top-p on the tempered distribution (so they cut the distribution actually sampled from).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import SeqgenError

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
        return self.temperature == 0


def penalize(logits: np.ndarray, recent: np.ndarray, penalty: float) -> None:
    """In place: make tokens in `recent` ([batch, window] ids) less likely (llama.cpp's rule)."""
    rows = np.arange(logits.shape[0])[:, None]
    picked = logits[rows, recent]
    logits[rows, recent] = np.where(picked > 0, picked / penalty, picked * penalty)


def choose(logits: np.ndarray, options: Sampling, rng: np.random.Generator) -> np.ndarray:
    """Token ids ([batch] int64) drawn from `logits` ([batch, vocab]); `logits` may be modified."""
    if options.greedy:
        return logits.argmax(axis=1)
    logits /= options.temperature
    if options.top_k is not None and options.top_k < logits.shape[1]:
        kth = np.partition(logits, -options.top_k, axis=1)[:, -options.top_k, None]
        logits[logits < kth] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits, out=logits)
    if options.min_p is not None:
        probs[probs < options.min_p] = 0.0  # the maximum is exp(0) = 1, so this is relative to it
    if options.top_p is not None and options.top_p < 1:
        order = np.argsort(-probs, axis=1)
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        cumulative = np.cumsum(sorted_probs, axis=1)
        # keep the smallest prefix whose mass reaches top_p of the total (the first token always stays)
        drop = (cumulative - sorted_probs) >= options.top_p * cumulative[:, -1:]
        sorted_probs[drop] = 0.0
        probs = np.zeros_like(probs)
        np.put_along_axis(probs, order, sorted_probs, axis=1)
    cumulative = np.cumsum(probs, axis=1)
    threshold = rng.random(probs.shape[0]) * cumulative[:, -1]
    picks = (cumulative <= threshold[:, None]).sum(axis=1)
    return np.minimum(picks, probs.shape[1] - 1)
