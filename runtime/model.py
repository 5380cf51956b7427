"""Model: a loaded seqgen file with predict, generate, score and stateful sessions."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checks, modelfile
from .errors import SeqgenError
from .generate import check_length, generate_texts, prompt_session, stream_rows
from .sampling import Sampler, Sampling
from .sampling import options as sampling_options
from .session import Session
from .stepgraph import Graph
from .vocab import IGNORE, frame_items

SCORE_BATCH = 256
"""Most line items scored together in one call."""
SCORE_TOKENS = 65_536
"""Most padded positions (items x longest) of line items scored in one call: their logits are at most
SCORE_TOKENS x vocabulary floats, whatever the lines' lengths (a longer line goes alone, in chunks)."""


@dataclass(frozen=True)
class Score:
    """How well a model predicts a text: per predicted token, its log-probability (nats) and whether
    it was the model's most likely choice."""

    logprobs: np.ndarray
    correct: np.ndarray

    @property
    def tokens(self) -> int:
        return int(self.logprobs.size)

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood in nats per token."""
        return float(-self.logprobs.mean())

    @property
    def accuracy(self) -> float:
        """Fraction of tokens that were the most likely prediction."""
        return float(self.correct.mean())

    @property
    def bits_per_char(self) -> float:
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one): more onnxruntime
    threads than that only compete for them (1,000 threads ran 50x slower than 1)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


class Model:
    """A seqgen model ready to run on the CPU: its file, vocabulary and step graph. Safe to share between threads."""

    def __init__(self, file: modelfile.ModelFile, *, threads: int = 1) -> None:
        threads = checks.integer("threads (at most the CPUs this process may use)", threads, 1, usable_cpus())
        self.file = file
        self.vocab = file.vocab
        self.graph = Graph(file, threads)

    @property
    def path(self) -> Path:
        """The file this model was loaded from."""
        return self.file.path

    @property
    def line_items(self) -> bool:
        """Whether the model was trained on line items (each line one item, ended by the boundary token)
        rather than running text."""
        return self.file.line_items

    @property
    def keras_input_length(self) -> int | None:
        """The input length of the Keras model this one was imported from (seqgen.window); None if none."""
        return self.file.keras_input_length

    @property
    def info(self) -> dict[str, object]:
        """The file's metadata (format version, cell, sizes, vocabulary, training facts)."""
        return self.file.info

    def session(self, batch_size: int = 1) -> Session:
        """A fresh stateful Session: feed text, read or sample the next character, save/load state."""
        return Session(self, batch_size)

    def with_unknown(self, unknown: str, replacement: str | None = None) -> Model:
        """This model with another policy for characters outside the vocabulary (shares the graph)."""
        clone = copy.copy(self)
        clone.vocab = self.vocab.with_policy(unknown, replacement)
        return clone

    # -- next character ----------------------------------------------------------------------

    def predict(self, text: str, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely next characters after `text`, with probabilities, most likely first.

        For line-item models the end of the item is the empty string.
        """
        return self.predict_batch([text], k)[0]

    def predict_batch(self, texts: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        """`predict` for many texts."""
        k = checks.integer("k", k, 1)
        if isinstance(texts, str):
            raise SeqgenError("predict_batch takes a list of texts; for one text use predict")
        if len(texts) > checks.MAX_BATCH:
            raise SeqgenError(f"predict_batch takes at most {checks.MAX_BATCH} texts at a time, got {len(texts)}; "
                              "split the list")
        if not texts:
            return []
        probs = prompt_session(self, texts).distribution()
        k = min(k, self.vocab.size if self.line_items else self.vocab.size - 1)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.vocab.char(int(t)), float(p[t])) for t in row] for p, row in zip(probs, top)]

    # -- generation --------------------------------------------------------------------------

    def stream(self, prompt: str = "", max_new_chars: int = 200, *, sampling: Sampling | None = None,
               **options: object) -> Iterator[str]:
        """Yield new text as it is made (stop strings are never emitted).

        The options are those of seqgen.Sampling (temperature, top_k, top_p, min_p, repetition_penalty, seed,
        stop, and the constraints allowed, banned, pattern), given as keywords or as one `sampling=Sampling(...)`;
        they are checked, and impossible constraints refused, before any text is made.
        """
        sampler, max_new_chars = Sampler(sampling_options(sampling, options)), check_length(max_new_chars)
        for pieces in stream_rows(prompt_session(self, [prompt]), max_new_chars, sampler):
            if pieces[0]:
                yield pieces[0]

    def generate(self, prompt: str = "", max_new_chars: int = 200, *, sampling: Sampling | None = None,
                 **options: object) -> str:
        """New text after `prompt` (the prompt itself is not included). Options as in `stream`."""
        return "".join(self.stream(prompt, max_new_chars, sampling=sampling, **options))

    def generate_batch(self, prompts: Sequence[str], max_new_chars: int = 200, *, sampling: Sampling | None = None,
                       **options: object) -> list[str]:
        """New text for each prompt, all sequences advanced together by one batched step per character.

        Options as in `stream`; one random stream serves the whole batch, row after row at each step.
        """
        if isinstance(prompts, str):
            raise SeqgenError("generate_batch takes a list of prompts; for one prompt use generate")
        if not prompts:
            return []
        return generate_texts(self, prompts, max_new_chars, Sampler(sampling_options(sampling, options)))

    # -- scoring -----------------------------------------------------------------------------

    def score(self, text: str) -> Score:
        """Log-probability of each character of `text` given the ones before it.

        Running-text models score the whole text with carried state. Line-item models score each
        non-empty line as an item from a fresh state, its end-of-item token included.
        """
        if self.line_items:
            return self._score_items([line for line in checks.text(text).splitlines() if line])
        ids = self.vocab.encode(text)
        if ids.size == 0:
            raise SeqgenError("nothing to score: the text is empty (after the unknown-character policy)")
        parts, done = [], 0
        for logits in self.session().chunk_logits(ids[None, :-1]):  # state carries across chunks
            width = logits.shape[1]
            parts.append(_score_rows(logits[0], ids[done : done + width]))
            done += width
        return _joined(parts)

    def _score_items(self, items: list[str]) -> Score:
        """Each item from a fresh state. Items go to the graph in groups of similar length, so the padding
        (and the logits held at once) follow the group's characters, not its count times its longest
        line; each item's scores are put back in its place, so the result is the same in any grouping."""
        if not items:
            raise SeqgenError("nothing to score: the text has no non-empty lines")
        encoded = [ids for ids in (self.vocab.encode(item) for item in items) if ids.size]
        if not encoded:
            raise SeqgenError("nothing to score: every line is empty after the unknown-character policy")
        scored: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in encoded]
        for group in _groups(sorted(range(len(encoded)), key=lambda i: encoded[i].size), encoded):
            inputs, targets = frame_items([encoded[i] for i in group])
            done = 0  # a fresh session feeds the leading boundary itself
            for logits in self.session(len(group)).chunk_logits(inputs[:, 1:]):
                chunk = targets[:, done : done + logits.shape[1]]
                mask = chunk != IGNORE
                logprobs, correct = _score_rows(logits[mask], chunk[mask])
                cuts = np.cumsum(mask.sum(axis=1))[:-1]
                for item, piece in zip(group, zip(np.split(logprobs, cuts), np.split(correct, cuts))):
                    scored[item].append(piece)
                done += logits.shape[1]
        return _joined([piece for pieces in scored for piece in pieces])


def _groups(order: list[int], encoded: list[np.ndarray]) -> Iterator[list[int]]:
    """Consecutive runs of `order` (items by length) of at most SCORE_BATCH items whose padded size,
    items x (longest + 1), stays within SCORE_TOKENS; a longer item goes alone."""
    group: list[int] = []
    for item in order:
        width = encoded[item].size + 1  # the longest so far: `order` is by length
        if group and (len(group) == SCORE_BATCH or (len(group) + 1) * width > SCORE_TOKENS):
            yield group
            group = []
        group.append(item)
    yield group


def _score_rows(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log softmax(logits)[target], and whether the target was the argmax, for each row ([n, vocab])."""
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    picked = logits[np.arange(len(targets)), targets]
    return picked - log_norm, picked >= top[:, 0]


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> Score:
    return Score(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
