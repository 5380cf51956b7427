"""Text generation: prompts in, new characters out, one step per character for the whole batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import checks
from .errors import SeqgenError
from .sampling import Sampler
from .session import Session
from .vocab import BOUNDARY

if TYPE_CHECKING:
    from .model import Model


def check_length(max_new_chars: int, rows: int = 1) -> int:
    """The number of characters to generate, checked before any prompt is processed: at most MAX_NEW_CHARS a
    row, and at most MAX_BATCH_CHARS for all `rows` together (a batch holds its texts until it returns)."""
    max_new_chars = checks.integer("max_new_chars", max_new_chars, 0, checks.MAX_NEW_CHARS)
    if rows > 1 and rows * max_new_chars > checks.MAX_BATCH_CHARS:
        raise SeqgenError(f"{rows} samples x {max_new_chars} characters would hold more than "
                          f"{checks.MAX_BATCH_CHARS:,} characters at once; make fewer samples or shorter ones")
    return max_new_chars


class StopMatcher:
    """Holds back text that may be the start of a stop string, so a stop string is never emitted."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit, whether a stop string was reached)."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            emit, self.pending = self.pending[: min(hits)], ""
            return emit, True
        hold = 0
        for s in self.stops:
            hold = max(hold, next((n for n in range(min(len(s) - 1, len(self.pending)), 0, -1)
                                   if self.pending.endswith(s[:n])), 0))
        cut = len(self.pending) - hold
        emit, self.pending = self.pending[:cut], self.pending[cut:]
        return emit, False

    def flush(self) -> str:
        """The held-back text, at the end of generation."""
        emit, self.pending = self.pending, ""
        return emit


def prompt_session(model: Model, prompts: Sequence[str]) -> Session:
    """A Session holding each prompt, each processed once at batch 1 (so results match batch 1 exactly)."""
    singles: dict[str, Session] = {}
    for prompt in prompts:
        if prompt not in singles:
            single = Session(model)
            single.feed(prompt)
            singles[prompt] = single
    if len(prompts) == 1:
        return singles[prompts[0]]
    return Session.stack([singles[p] for p in prompts])


def stream_rows(session: Session, max_new_chars: int, sampler: Sampler) -> Iterator[list[str]]:
    """Step all sequences together; yield each step's new text per row ("" for finished rows). A row ends at
    its end token or at one of the sampler's stop strings (held back until it is clear, never emitted)."""
    sampler.start(session, max_new_chars)
    stop = sampler.options.stop
    chars = ("", *session.model.vocab.chars)
    if session.batch_size == 1 and not stop:  # the common case, kept free of per-row bookkeeping
        for _ in range(max_new_chars):
            token = int(session.sample(sampler)[0])
            if token == BOUNDARY:
                return
            yield [chars[token]]
        return
    done = np.zeros(session.batch_size, bool)
    matchers = [StopMatcher(stop) for _ in range(session.batch_size)] if stop else None
    for _ in range(max_new_chars):
        ids = session.sample(sampler)
        pieces = [chars[token] for token in np.where(done, BOUNDARY, ids).tolist()]
        done |= ids == BOUNDARY
        if matchers is not None:
            for row, piece in enumerate(pieces):
                if piece:
                    pieces[row], hit = matchers[row].push(piece)
                    done[row] |= hit
        yield pieces
        if done.all():
            break
    if matchers is not None:
        yield [m.flush() for m in matchers]


def generate_texts(model: Model, prompts: Sequence[str], max_new_chars: int, sampler: Sampler) -> list[str]:
    """New text for each prompt, all rows stepped together; `sampler.kept` then holds the constraints' kept mass."""
    max_new_chars = check_length(max_new_chars, len(prompts))
    texts: list[list[str]] = [[] for _ in prompts]
    for pieces in stream_rows(prompt_session(model, prompts), max_new_chars, sampler):
        for text, piece in zip(texts, pieces):
            text.append(piece)
    return ["".join(t) for t in texts]
