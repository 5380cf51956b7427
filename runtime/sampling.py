"""Choosing the next character from logits: temperature, top-k, top-p, min-p, repetition penalty.

The names follow llama.cpp. Order: repetition penalty, then temperature, then top-k, min-p and
top-p on the tempered distribution (so they cut the distribution actually sampled from).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import SeqgenError
from .vocab import BOUNDARY

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

    The boundary token is left alone: it starts every sequence, so it is always recent, and for
    line-item models it is how an item ends. Results stay finite (an extreme penalty must not turn a
    candidate into +-inf); masked tokens (-inf) stay masked.
    """
    boundary = logits[:, BOUNDARY].copy()
    rows = np.arange(logits.shape[0])[:, None]
    picked = logits[rows, recent].astype(np.float64)
    changed = np.clip(np.where(picked > 0, picked / penalty, picked * penalty), -FLOAT32_MAX, FLOAT32_MAX)
    logits[rows, recent] = np.where(np.isneginf(picked), picked, changed)
    logits[:, BOUNDARY] = boundary


class Sampler:
    """Sampling options with their stream of random numbers: turns next-token logits into token ids.

    Each row's candidates are sorted once, so top-k and top-p are prefix cuts and the draw is a
    binary search; uniforms are drawn from the generator in blocks, which yields exactly the
    numbers one draw per token would. At batch 1 this is a handful of small numpy calls.
    """

    BLOCK = 256

    def __init__(self, options: Sampling | None = None, rng: np.random.Generator | int | None = None) -> None:
        self.options = options or Sampling()
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._uniforms = np.empty(0)
        self._next = 0

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """Token ids ([batch] int64) for `logits` ([batch, vocab]); masked tokens are -inf."""
        if self.options.greedy:
            return logits.argmax(axis=1)
        return np.fromiter((self._draw(row) for row in logits), np.int64, count=len(logits))

    def _draw(self, row: np.ndarray) -> int:
        options = self.options
        order = (-row).argsort(kind="stable")
        if options.top_k is not None:
            order = order[: options.top_k]
        scores = row[order].astype(np.float64)  # float64: no valid temperature overflows the division
        weights = np.exp((scores - scores[0]) / options.temperature)  # the best candidate weighs 1
        if options.min_p is not None:
            weights[weights < options.min_p] = 0.0
        cumulative = weights.cumsum()
        if options.top_p is not None and options.top_p < 1:  # the smallest prefix holding top_p of the mass
            cumulative = cumulative[: cumulative.searchsorted(options.top_p * cumulative[-1]) + 1]
        pick = cumulative.searchsorted(self._uniform() * cumulative[-1], side="right")
        return int(order[min(pick, len(cumulative) - 1)])

    def _uniform(self) -> float:
        if self._next == len(self._uniforms):
            self._uniforms, self._next = self.rng.random(self.BLOCK), 0
        self._next += 1
        return self._uniforms[self._next - 1]

