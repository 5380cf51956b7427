"""A Session carries the recurrent state of one or more sequences through the exported step graph.

Text fed in is processed in one call; each further character costs one step. The Session owns
its state and buffers, so many Sessions may share one Model (and its onnxruntime session) across
threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import SeqgenError
from .sampling import PENALTY_WINDOW, Sampling, choose, penalize
from .vocab import BOUNDARY

if TYPE_CHECKING:
    from .model import Model

MAX_CHUNK = 16_384
"""Longest run of tokens sent in one call; longer texts go in chunks so memory stays bounded."""


class Session:
    """Recurrent state for `batch_size` sequences, each started by the boundary token."""

    def __init__(self, model: Model, batch_size: int = 1) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise SeqgenError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        shape = (model.file.layers, batch_size, model.file.hidden_size)
        self._state = {name: np.zeros(shape, np.float32) for name in model.state_names}
        self._logits: np.ndarray | None = None  # [batch, vocab] after the last token fed
        self._history: list[np.ndarray] = []  # [batch, time] token arrays fed so far, boundary first
        self.steps = 0
        """Number of calls into the graph so far (a cost counter, used by tests)."""

    @classmethod
    def stack(cls, sessions: Sequence[Session]) -> Session:
        """One Session continuing each of `sessions` (batch 1 each, same model) as one batch."""
        model = sessions[0].model
        batch = cls(model, len(sessions))
        for single in sessions:
            single.logits()  # make sure each has started
        batch._state = {n: np.concatenate([s._state[n] for s in sessions], axis=1) for n in model.state_names}
        batch._logits = np.concatenate([s._logits for s in sessions])  # type: ignore[misc]
        width = max(s.tokens.shape[1] for s in sessions)
        history = np.full((len(sessions), width), BOUNDARY, np.int64)  # ragged rows: left-padded
        for row, single in enumerate(sessions):
            history[row, width - single.tokens.shape[1] :] = single.tokens[0]
        batch._history = [history]
        return batch

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        """Append `text` to every sequence, in one call (or a few, for very long text)."""
        ids = self.model.vocab.encode(text)
        self.feed_tokens(np.broadcast_to(ids, (self.batch_size, len(ids))))

    def feed_tokens(self, tokens: np.ndarray) -> None:
        """Append token ids ([batch, time] int64) to the sequences."""
        for _ in self.chunk_logits(tokens):
            pass

    def chunk_logits(self, tokens: np.ndarray) -> Iterator[np.ndarray]:
        """Feed token ids ([batch, time]); yield the logits ([batch, t, vocab]) of each chunk sent.

        A fresh session first feeds the boundary token, so its first logits predict `tokens[:, 0]`.
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[0] != self.batch_size:
            raise SeqgenError(f"tokens must have shape [{self.batch_size}, time], got {list(tokens.shape)}")
        if not self._history:
            tokens = np.concatenate([np.full((self.batch_size, 1), BOUNDARY, np.int64), tokens], axis=1)
        if tokens.shape[1]:
            self._history.append(tokens)
        for start in range(0, tokens.shape[1], MAX_CHUNK):
            logits = self._run(np.ascontiguousarray(tokens[:, start : start + MAX_CHUNK]))
            self._logits = logits[:, -1]
            yield logits

    def _run(self, tokens: np.ndarray) -> np.ndarray:
        feeds = {"tokens": tokens, **self._state}
        logits, *states = self.model.ort.run(self.model.output_names, feeds)
        self._state = dict(zip(self.model.state_names, states))
        self.steps += 1
        return logits

    # -- reading -----------------------------------------------------------------------------

    def logits(self) -> np.ndarray:
        """Logits ([batch, vocab], a copy) for the next token of each sequence."""
        if self._logits is None:
            self.feed_tokens(np.empty((self.batch_size, 0), np.int64))
        return self._logits.copy()  # type: ignore[union-attr]

    def distribution(self) -> np.ndarray:
        """Next-token probabilities ([batch, vocab]); running-text models never end a text."""
        logits = self.logits()
        if not self.model.file.line_items:
            logits[:, BOUNDARY] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    @property
    def tokens(self) -> np.ndarray:
        """All token ids fed so far ([batch, time]), the starting boundary included; rows of a stacked
        batch whose prompts differed in length are left-padded with the boundary token."""
        if not self._history:
            return np.empty((self.batch_size, 0), np.int64)
        if len(self._history) > 1:
            self._history = [np.concatenate(self._history, axis=1)]
        return self._history[0]

    @property
    def text(self) -> list[str]:
        """The text of each sequence so far (boundary tokens left out)."""
        return [self.model.vocab.decode(row) for row in self.tokens.tolist()]

    def _recent(self, window: int) -> np.ndarray:
        pieces, count = [], 0
        for piece in reversed(self._history):
            pieces.append(piece)
            count += piece.shape[1]
            if count >= window:
                break
        return np.concatenate(pieces[::-1], axis=1)[:, -window:]

    # -- sampling ----------------------------------------------------------------------------

    def sample(self, options: Sampling | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
        """Draw the next token of every sequence, feed it, and return the ids ([batch])."""
        options = options or Sampling()
        logits = self.logits()
        if not self.model.file.line_items:
            logits[:, BOUNDARY] = -np.inf
        if options.repetition_penalty != 1.0:
            penalize(logits, self._recent(PENALTY_WINDOW), options.repetition_penalty)
        ids = choose(logits, options, rng if rng is not None else np.random.default_rng())
        self.feed_tokens(ids[:, None])
        return ids

    # -- state -------------------------------------------------------------------------------

    def save_state(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays that `load_state` (here or in another process) continues from."""
        self.logits()
        saved = {name: value.copy() for name, value in self._state.items()}
        saved["tokens"] = self.tokens.copy()
        saved["logits"] = self._logits.copy()  # type: ignore[union-attr]
        return saved

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        """Continue from arrays made by `save_state` on the same model."""
        layers, hidden, vocab = self.model.file.layers, self.model.file.hidden_size, self.model.vocab.size
        expected = {name: (layers, self.batch_size, hidden) for name in self.model.state_names}
        expected["logits"] = (self.batch_size, vocab)
        for name, shape in expected.items():
            value = saved.get(name)
            if not isinstance(value, np.ndarray) or value.shape != shape:
                raise SeqgenError(f"saved state has no {name!r} of shape {shape}; save it from a session "
                                  "of this model with the same batch size")
        tokens = np.asarray(saved.get("tokens"), dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[0] != self.batch_size or tokens.size == 0 \
                or tokens.min() < 0 or tokens.max() >= vocab:
            raise SeqgenError("saved state's tokens do not fit this model; save it from a session of this model")
        self._state = {name: np.array(saved[name], np.float32) for name in self.model.state_names}
        self._logits = np.array(saved["logits"], np.float32)
        self._history = [tokens.copy()]
