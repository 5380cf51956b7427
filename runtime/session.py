"""A Session carries the recurrent state of one or more sequences through the exported step graph.

Text fed in is processed in one call (chunks of MAX_CHUNK tokens for very long text); each further
token costs one step. A step runs on buffers bound once to the graph (onnxruntime's IOBinding), so
the graph call itself allocates nothing. A Session belongs to one thread; many Sessions may share
one Model across threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import checks
from .cells import bounded_names
from .errors import SeqgenError
from .modelfile import TOKENS_INPUT
from .sampling import Sampler, mask_end
from .vocab import BOUNDARY

if TYPE_CHECKING:
    from .model import Model

MAX_CHUNK = 16_384
"""Longest run of tokens sent in one call; longer texts go in chunks so memory stays bounded."""


class Session:
    """Recurrent state for `batch_size` sequences, each started by the boundary token."""

    def __init__(self, model: Model, batch_size: int = 1) -> None:
        batch_size = checks.integer("batch_size", batch_size, 1, checks.MAX_BATCH)
        self.model = model
        self.batch_size = batch_size
        # States live in fixed buffers: graph inputs, refreshed in place after every call.
        self._state = model.graph.zero_state(batch_size)
        self._logits: np.ndarray | None = None  # [batch, vocab] after the last token fed
        self._tokens = np.empty((batch_size, 64), np.int64)  # every token fed, boundary first; grows
        self._length = 0
        self._step = None  # the bound single-token call, made on first use
        self._default_sampler: Sampler | None = None
        self._unbounded = not model.graph.bounded  # a state that can overflow is checked
        self.steps = 0
        """Number of calls into the graph so far (a cost counter, used by tests)."""

    @classmethod
    def stack(cls, sessions: Sequence[Session]) -> Session:
        """One Session continuing each of `sessions` (batch 1 each, same model) as one batch."""
        if not sessions or any(s.batch_size != 1 or s.model is not sessions[0].model for s in sessions):
            raise SeqgenError("stack takes one or more sessions of batch size 1 of the same model")
        if len(sessions) > checks.MAX_BATCH:
            raise SeqgenError(f"at most {checks.MAX_BATCH} sequences run as one batch, got {len(sessions)}; "
                              "split them into smaller batches")
        model = sessions[0].model
        batch = cls(model, len(sessions))
        for single in sessions:
            single.current()  # make sure each has started
        for name, buffer in batch._state.items():
            np.concatenate([s._state[name] for s in sessions], axis=1, out=buffer)
        batch._logits = np.concatenate([s._logits for s in sessions])  # type: ignore[misc]
        width = max(s._length for s in sessions)
        history = np.full((len(sessions), width), BOUNDARY, np.int64)  # ragged rows: left-padded
        for row, single in enumerate(sessions):
            history[row, width - single._length :] = single.tokens[0]
        batch._append(history)
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
        """Feed token ids ([batch, time]); return an iterator of the logits ([batch, t, vocab]) of each
        chunk sent. The ids are checked at once; the chunks run as the iterator is consumed.

        A fresh session first feeds the boundary token, so its first logits predict `tokens[:, 0]`.
        """
        tokens = self._token_ids(tokens)
        if tokens.ndim != 2 or tokens.shape[0] != self.batch_size:
            raise SeqgenError(f"tokens must have shape [{self.batch_size}, time], got {list(tokens.shape)}")
        return self._chunks(tokens)

    def _token_ids(self, ids: object) -> np.ndarray:
        """`ids` as int64, refused unless every one is an integer in 0..vocabulary size - 1 (-1 would wrap
        to the last character, a large id fail inside onnxruntime)."""
        array = np.asarray(ids)
        if array.dtype.kind not in "iu":
            raise SeqgenError(f"token ids must be integers, got an array of {array.dtype}; encode text with the "
                              "model's vocabulary")
        array = array.astype(np.int64, copy=False)
        if (array.view(np.uint64) >= self.model.vocab.size).any():  # one test: negative ids view as huge ones
            raise SeqgenError(f"token ids must be in 0..{self.model.vocab.size - 1}; encode text with the model's "
                              "vocabulary")
        return array

    def _chunks(self, tokens: np.ndarray) -> Iterator[np.ndarray]:
        if not self._length:
            tokens = np.concatenate([np.full((self.batch_size, 1), BOUNDARY, np.int64), tokens], axis=1)
        self._append(tokens)
        for start in range(0, tokens.shape[1], MAX_CHUNK):
            logits = self._run(np.ascontiguousarray(tokens[:, start : start + MAX_CHUNK]))
            if self._unbounded:
                self._check_finite(logits)
            self._logits = logits[:, -1].copy()  # the session's own: sampling masks it in place
            yield logits

    def _run(self, tokens: np.ndarray) -> np.ndarray:
        logits, states = self.model.graph.run(tokens, self._state)
        for name, buffer in self._state.items():
            np.copyto(buffer, states[name])
        self.steps += 1
        return logits

    def step(self, ids: np.ndarray) -> None:
        """Append one token per sequence (`ids`, [batch]) in one bound call: the per-character path.
        The ids are checked first, so a bad one changes nothing."""
        ids = self._token_ids(ids)
        if ids.shape != (self.batch_size,):
            raise SeqgenError(f"step takes {self.batch_size} token id(s), one per sequence, got {list(ids.shape)}")
        self._advance(ids)

    def _advance(self, ids: np.ndarray) -> None:
        """`step` for ids already known to be valid ([batch] int64 from a Sampler): no second check per character."""
        if self._step is None:
            self.current()
            self._step = _BoundStep(self)
        self._append(ids[:, None])
        self._logits = self._step(ids)
        if self._unbounded:  # bounded cells pay only this test per character
            self._check_finite(self._logits)
        self.steps += 1

    def _check_finite(self, logits: np.ndarray) -> None:
        """A ReLU RNN's state can grow without bound far beyond the lengths it was trained on; once it
        overflows, its outputs are inf or NaN and every choice made from them would be garbage."""
        if not np.isfinite(logits.max()):  # max is NaN if any is, inf if any is
            raise SeqgenError(f"the model's outputs overflowed to inf/NaN after {self._length} tokens: its "
                              "ReLU recurrent state grew without bound; use shorter texts, or a model with a "
                              f"bounded cell ({', '.join(bounded_names())})")

    def _append(self, tokens: np.ndarray) -> None:
        end = self._length + tokens.shape[1]
        if end > self._tokens.shape[1]:
            grown = np.empty((self.batch_size, max(2 * self._tokens.shape[1], end)), np.int64)
            grown[:, : self._length] = self._tokens[:, : self._length]
            self._tokens = grown
        self._tokens[:, self._length : end] = tokens
        self._length = end

    # -- reading -----------------------------------------------------------------------------

    def current(self) -> np.ndarray:
        """The logits after the last token fed (the session's own array, not a copy); a fresh session
        feeds its boundary token first."""
        if self._logits is None:
            self.feed_tokens(np.empty((self.batch_size, 0), np.int64))
        return self._logits  # type: ignore[return-value]

    def logits(self) -> np.ndarray:
        """Logits ([batch, vocab], a copy) for the next token of each sequence."""
        return self.current().copy()

    def distribution(self) -> np.ndarray:
        """Next-token probabilities ([batch, vocab]) under the end rule (seqgen.sampling.mask_end)."""
        logits = self.logits()
        mask_end(logits, self.model.line_items)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    @property
    def tokens(self) -> np.ndarray:
        """All token ids fed so far ([batch, time]), the starting boundary included; rows of a stacked
        batch whose prompts differed in length are left-padded with the boundary token."""
        return self._tokens[:, : self._length]

    @property
    def text(self) -> list[str]:
        """The text of each sequence so far (boundary tokens left out)."""
        return [self.model.vocab.decode(row) for row in self.tokens.tolist()]

    # -- sampling ----------------------------------------------------------------------------

    def sample(self, sampler: Sampler | Sequence[Sampler] | None = None) -> np.ndarray:
        """Draw the next token of every sequence, feed it, and return the ids ([batch]).

        `sampler` shapes and draws (every stage: seqgen.sampling); None uses this session's default sampler,
        whose random stream carries on between calls. A list of Samplers, one per row, samples each row with
        its own options and random stream.
        """
        if sampler is None:
            self._default_sampler = self._default_sampler or Sampler()
            sampler = self._default_sampler
        if isinstance(sampler, Sampler):
            ids = sampler.choose(self)
        else:
            if len(sampler) != self.batch_size or not all(isinstance(s, Sampler) for s in sampler):
                raise SeqgenError(f"sample takes one Sampler, or a list of {self.batch_size} (one per row)")
            ids = np.concatenate([one.choose(self, row) for row, one in enumerate(sampler)])
        self._advance(ids)
        return ids

    # -- state -------------------------------------------------------------------------------

    def save_state(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays that `load_state` (here or in another process) continues from."""
        saved = {"logits": self.current().copy(), "tokens": self.tokens.copy()}
        saved.update({name: value.copy() for name, value in self._state.items()})
        return saved

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        """Continue from arrays made by `save_state` on the same model."""
        vocab = self.model.vocab.size
        expected = {name: buffer.shape for name, buffer in self._state.items()}
        expected["logits"] = (self.batch_size, vocab)
        if not isinstance(saved, dict):
            raise SeqgenError("load_state takes the dict that save_state returned")
        arrays = {}  # every array checked and converted before anything of this session changes
        for name, shape in expected.items():
            value = saved.get(name)
            if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype.kind not in "fiu":
                raise SeqgenError(f"saved state has no real-valued {name!r} of shape {shape}; save it from a session "
                                  "of this model with the same batch size")
            with np.errstate(over="ignore"):
                arrays[name] = value.astype(np.float32)
            # states are finite; logits may hold -inf (a token masked out) but never NaN or +inf
            if not (np.isfinite(arrays[name]).all() if name != "logits" else (arrays[name] < np.inf).all()):
                raise SeqgenError(f"saved state's {name!r} holds NaN or infinite values; it is damaged, save it again")
        tokens = saved.get("tokens")
        if not isinstance(tokens, np.ndarray) or tokens.dtype.kind not in "iu" or tokens.ndim != 2 \
                or tokens.shape[0] != self.batch_size or tokens.size == 0 or tokens.min() < 0 or tokens.max() >= vocab:
            raise SeqgenError("saved state's tokens do not fit this model; save it from a session of this model")
        for name, buffer in self._state.items():
            np.copyto(buffer, arrays[name])
        self._logits = arrays["logits"]
        self._length = 0
        self._append(tokens)


class _BoundStep:
    """One token per sequence through the graph, inputs and outputs bound to fixed buffers."""

    def __init__(self, session: Session) -> None:
        graph, batch = session.model.graph, session.batch_size
        self.graph = graph
        self.tokens = np.zeros((batch, 1), np.int64)
        self.logits = np.empty((batch, 1, graph.vocab_size), np.float32)
        self.copies = [(session._state[name], np.empty_like(session._state[name])) for name in graph.state_names]
        self.binding = binding = graph.io_binding()
        for name, array in ((TOKENS_INPUT, self.tokens), *session._state.items()):
            binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        outputs = (self.logits, *(fresh for _, fresh in self.copies))
        for name, array in zip(graph.output_names, outputs):
            binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        self.tokens[:, 0] = ids
        self.graph.run_with_iobinding(self.binding)
        for state, fresh in self.copies:
            state[...] = fresh
        return self.logits[:, 0]
