"""The sampler: one pipeline that owns every step shaping the next-character distribution.

`Sampling` holds the options (validated once, immutable); a `Sampler` applies them, with its own random
stream, to the next-token logits of a Session's rows, in this fixed order:

  1. end rule: a running-text model never ends a text (its boundary token is masked); a line-item model
     may end an item (its boundary token is its end)
  2. repetition penalty: tokens among the last PENALTY_WINDOW (prompt included) made less likely, by
     llama.cpp's rule; the end of an item is never penalised
  3. constraints (allowed, banned, pattern; seqgen.constrain): tokens after which no accepted text fits in
     the characters left are masked; the end token is offered only where the text is accepted (for a
     running-text model, only where it cannot grow). The probability mass kept is recorded in `kept`
  4. temperature: 0 (or below GREEDY_BELOW) takes the most likely token, and stages 5-8 do not apply
  5. top-k: only the k most likely tokens stay (top-k and temperature commute: it is an order cut)
  6. min-p: tokens whose tempered weight is below min_p times the best one's are dropped
  7. top-p: the smallest set of the most likely tokens holding top_p of the tempered mass stays
  8. the draw: one uniform number per row from the sampler's stream (drawn in blocks, which yields
     exactly the numbers one draw per token would), so a seed fixes the text

A Session feeds and steps; it never shapes logits itself. Adding an option means a field of `Sampling`
with its check, and its stage in `Sampler`, here (a large stage in a module of its own, as the constraints);
plus its flag in cli.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from . import checks
from .errors import SeqgenError
from .vocab import BOUNDARY

if TYPE_CHECKING:
    from .constrain import Automaton
    from .session import Session

GREEDY_BELOW = 1e-30
"""Temperatures below this pick the most likely token, as temperature 0 does."""
PENALTY_WINDOW = 64
"""How many recent tokens (prompt and generated) the repetition penalty looks at."""
MAX_STOPS = 64
MAX_STOP_CHARS = 1_000
MAX_BANNED = 1_000
MAX_BANNED_CHARS = 100
MAX_ALLOWED_CHARS = 100_000
FLOAT32_MAX = float(np.finfo(np.float32).max)
NO_LIMIT = 2**31 - 2
"""The characters left when a sampler is used without a length limit (Session.sample alone)."""


@dataclass(frozen=True)
class Sampling:
    """Every option of how the next character is chosen, checked once; immutable and hashable.

    Build it with keyword arguments: `Sampling(temperature=0.8, seed=1)`, or `Sampling.from_kwargs(**kwargs)`,
    which also turns an unknown name into a SeqgenError (use it on options that come from outside, such as a
    request). temperature 0 is greedy; top_k, top_p and min_p None are off; repetition_penalty 1 is off;
    seed None draws fresh entropy; stop is one text or several (normalised to a tuple), never emitted.
    Constraints (docs/constrained.md): `allowed`, the only characters to generate (normalised to sorted unique
    ones); `banned`, words never generated, not even across the prompt boundary; `pattern`, a regular
    expression the whole generated text fully matches (needs the `constrain` extra).
    Integers are Python or numpy integers (not bools) and reals finite (seqgen.checks), else SeqgenError.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    allowed: str | None = None
    banned: tuple[str, ...] = ()
    pattern: str | None = None

    def __post_init__(self) -> None:
        def fix(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        fix("temperature", checks.real("temperature", self.temperature, 0))
        fix("top_k", None if self.top_k is None else checks.integer("top_k", self.top_k, 1))
        for name in ("top_p", "min_p"):
            value = getattr(self, name)
            fix(name, None if value is None else checks.real(name, value, 0, 1, above=True))
        fix("repetition_penalty", checks.real("repetition_penalty", self.repetition_penalty, 0, above=True))
        fix("seed", checks.seed(self.seed))
        fix("stop", texts("stop strings", self.stop, MAX_STOPS, MAX_STOP_CHARS))
        if self.allowed is not None:
            if not isinstance(self.allowed, str) or not 0 < len(self.allowed) <= MAX_ALLOWED_CHARS:
                raise SeqgenError(f"allowed must be a non-empty text of at most {MAX_ALLOWED_CHARS} characters (the "
                                  f"characters to allow), got {self.allowed!r:.80}")
            fix("allowed", "".join(sorted(set(self.allowed))))
        fix("banned", texts("banned words", self.banned, MAX_BANNED, MAX_BANNED_CHARS))
        if self.pattern is not None:
            from . import pattern  # here: only a pattern needs it (and its optional engine)

            fix("pattern", pattern.check(self.pattern))
            pattern.load_engine()

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> Sampling:
        """Options from keyword arguments; an unknown name is a SeqgenError listing the known ones."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise SeqgenError(f"unknown sampling option {unknown[0]!r}; the options are {', '.join(names)}")
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def constrained(self) -> bool:
        """Whether any constraint (allowed, banned, pattern) is set: then stage 3 runs."""
        return self.allowed is not None or bool(self.banned) or self.pattern is not None

    @property
    def greedy(self) -> bool:
        """Temperature 0, or one so small that sampling from it is greedy anyway (no overflow)."""
        return self.temperature < GREEDY_BELOW


def options(sampling: Sampling | None, kwargs: dict[str, object]) -> Sampling:
    """The one options object of a call that takes either `sampling=Sampling(...)` or the options as keywords."""
    if sampling is None:
        return Sampling.from_kwargs(**kwargs)
    if not isinstance(sampling, Sampling):
        raise SeqgenError(f"sampling must be a seqgen.Sampling, got {type(sampling).__name__}")
    if kwargs:
        raise SeqgenError(f"give the options either as sampling=Sampling(...) or as keywords, not both "
                          f"(got {', '.join(sorted(kwargs))} as well)")
    return sampling


def texts(name: str, value: object, most: int, longest: int) -> tuple[str, ...]:
    """One text or a sequence of texts as a tuple of non-empty texts, bounded in count and length."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, Sequence) else None
    if items is None or any(not isinstance(item, str) or not item for item in items):
        raise SeqgenError(f"{name} must be non-empty text (one, or a list); remove the empty or non-text one")
    if len(items) > most or any(len(item) > longest for item in items):
        raise SeqgenError(f"{name}: at most {most}, each at most {longest} characters")
    return items


def mask_end(logits: np.ndarray, line_items: bool) -> None:
    """Stage 1, in place: running-text models never end a text, so their boundary token is never next."""
    if not line_items:
        logits[:, BOUNDARY] = -np.inf


def penalize(logits: np.ndarray, recent: np.ndarray, penalty: float) -> None:
    """Stage 2, in place: make tokens in `recent` ([batch, window] ids) less likely (llama.cpp's rule).

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
    """The pipeline above with its own stream of random numbers: turns next-token logits into token ids.

    `Session.sample(sampler)` runs every stage on the session's rows. To give each row of a batch its own
    options and random stream (a server batching requests), bind one Sampler per row with
    `sampler.start(session, max_new_chars, row=r)` and pass Session.sample the list of them: each row is
    then drawn exactly as that request alone at batch 1 would be; `move` carries a row's sampler over to a
    new batch that continues the row (seqgen.serve regroups its batch so). `rng` (a numpy Generator or a
    seed) overrides the options' seed. With constraints and `report_kept`, `kept` lists, per step, the
    probability mass ([rows]) of the model's distribution (after stages 1-2) that the constraints kept.
    """

    BLOCK = 256

    def __init__(self, options: Sampling | None = None, rng: np.random.Generator | int | None = None, *,
                 report_kept: bool = False) -> None:
        self.options = options or Sampling()
        if not isinstance(self.options, Sampling):
            raise SeqgenError(f"Sampler takes a seqgen.Sampling, got {type(self.options).__name__}")
        seed = self.options.seed if rng is None else rng
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(checks.seed(seed))
        self._uniforms = np.empty(0)
        self._next = 0
        self._session: Session | None = None
        self._rows = slice(None)
        self._automaton: Automaton | None = None  # with constraints, after start: the rows' states and counts
        self._states: list[int] = []
        self._seen = self._begun = self._limit = 0
        self.kept: list[np.ndarray] | None = [] if report_kept else None

    def start(self, session: Session, max_new_chars: int | None = None, row: int | None = None) -> None:
        """Bind the sampler to `session` (all rows, or one `row`), whose text so far is the prompt, for at most
        `max_new_chars` new characters (None: no limit). `choose` does this itself on first use. Constraints
        that no text can meet in that length are refused here, before anything is generated."""
        if row is not None:
            row = checks.integer("row", row, 0, session.batch_size - 1)
        if max_new_chars is not None:
            max_new_chars = checks.integer("max_new_chars", max_new_chars, 0)
        self._session = session
        self._rows = slice(None) if row is None else slice(row, row + 1)
        session.current()  # a fresh session feeds its boundary token first
        if not self.options.constrained:
            return
        from .constrain import compile_constraints, refuse_impossible  # here: only constraints need them

        options = self.options
        self._automaton = compile_constraints(session.model.vocab.chars, options.allowed, options.banned,
                                              options.pattern, options.stop)
        self._states = [self._automaton.start(text) for text in session.text[self._rows]]
        self._seen = self._begun = session.tokens.shape[1]
        self._limit = NO_LIMIT if max_new_chars is None else max_new_chars
        refuse_impossible(self._automaton, np.array(self._states), self._limit, options, session.model.vocab.chars)
        self.kept = None if self.kept is None else []

    def move(self, session: Session, row: int | None = None) -> None:
        """Carry on in `session` (all rows, or one `row`), which continues the sequences this sampler is bound to
        (the same state, and at least their last token): a server regrouping its batch. The constraints' state
        and the characters left carry over, so they need no more of the history than the penalty's window."""
        if self._session is None:
            raise SeqgenError("move needs a sampler bound by start (or a first choose) to a session")
        if self._automaton is not None:
            history = self._session.tokens[self._rows]
            self._catch_up(history)
            generated = self._seen - self._begun
            self._seen = session.tokens.shape[1]
            self._begun = self._seen - generated
        self._session = session
        self._rows = slice(None) if row is None else slice(row, row + 1)

    def choose(self, session: Session, row: int | None = None) -> np.ndarray:
        """The next token ids ([rows]) of the bound rows of `session`, through every stage in order."""
        rows = slice(None) if row is None else slice(row, row + 1)
        if session is not self._session or rows != self._rows:
            self.start(session, None, row)
        logits = session.current()[rows]  # worked on in place: the session's next step replaces it
        line_items = session.model.line_items
        mask_end(logits, line_items)
        history = session.tokens[rows]
        self._penalize(logits, history)
        if self._automaton is not None:
            self._constrain(logits, history, line_items)
        return self._draw_rows(logits)

    def __call__(self, logits: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
        """Token ids ([batch] int64) for `logits` ([batch, vocab], changed in place; masked tokens -inf): stages
        2 and 4-8. `history` ([batch, time] ids, oldest first) is what the repetition penalty looks at; a penalty
        without it is refused, never silently skipped. The end rule and constraints need the model and the
        text: use Session.sample."""
        if self.options.constrained:
            raise SeqgenError("constraints need the model's vocabulary and the text so far: sample through "
                              "Session.sample or generate")
        if not isinstance(logits, np.ndarray) or logits.ndim != 2 or logits.dtype.kind != "f" or 0 in logits.shape:
            raise SeqgenError("logits must be a float array [batch, vocab]; take them from Session.current()")
        if not np.isfinite(logits.max(axis=1)).all():  # all -inf, or NaN/inf anywhere in a row
            raise SeqgenError("logits hold NaN or inf, or a row with no finite value: there is nothing to sample")
        if history is not None:
            ids = np.asarray(history)
            if ids.ndim != 2 or len(ids) != len(logits) or ids.dtype.kind not in "iu" or (
                    ids.size and (ids.min() < 0 or ids.max() >= logits.shape[1])):
                raise SeqgenError(f"history must be token ids [batch, time] in 0..{logits.shape[1] - 1}, one row "
                                  "per row of logits")
        self._penalize(logits, history)
        return self._draw_rows(logits)

    def _penalize(self, logits: np.ndarray, history: np.ndarray | None) -> None:
        penalty = self.options.repetition_penalty
        if penalty != 1.0:
            if history is None:
                raise SeqgenError("repetition_penalty needs the token history: pass history=, or sample through "
                                  "Session.sample / generate")
            penalize(logits, history[:, -PENALTY_WINDOW:], penalty)

    def _constrain(self, logits: np.ndarray, history: np.ndarray, line_items: bool) -> None:
        """Stage 3, in place: mask what cannot lead to an accepted text in the characters left; record `kept`."""
        automaton = self._automaton
        self._catch_up(history)
        left = self._limit - (self._seen - self._begun)
        kept = []
        for row, state in zip(logits, self._states):  # one row at a time: a few scalar lookups and one mask
            if state < 0:  # the row has ended: only the end again, so a session sampled on stays within the
                kept.append(1.0)  # constraints (generate drops these draws; each still takes its one uniform)
                row[:] = -np.inf
                row[BOUNDARY] = 0.0
                continue
            refused, grows = automaton.refused_within(state, left)  # type: ignore[union-attr]
            end = automaton.accepting_states[state] and (line_items or not grows)  # type: ignore[union-attr]
            if not (grows or end):  # only text fed by hand can lead here
                raise SeqgenError("no character can continue this text within the constraints and the characters "
                                  "left; the text fed since sampling began does not fit them: start a new Sampler")
            boundary = row[BOUNDARY]
            if self.kept is not None:
                weights = np.exp(row - row.max(), dtype=np.float64)
                kept.append((weights[~refused].sum() + (weights[BOUNDARY] if end else 0.0)) / weights.sum())
            row[refused] = -np.inf
            if end:  # a running text ends only where its match cannot grow: the end is then the one choice
                row[BOUNDARY] = boundary if line_items else 0.0
        if self.kept is not None:
            self.kept.append(np.array(kept))

    def _catch_up(self, history: np.ndarray) -> None:
        """Advance the constraints' state over the tokens of `history` added since the last call."""
        for column in range(self._seen, history.shape[1]):
            self._states = self._automaton.advance(self._states, history[:, column])  # type: ignore[union-attr]
        self._seen = history.shape[1]

    def _draw_rows(self, logits: np.ndarray) -> np.ndarray:
        """Stages 4-8 for every row."""
        if self.options.greedy:
            return logits.argmax(axis=1)
        return np.fromiter((self._draw(row) for row in logits), np.int64, count=len(logits))

    def _draw(self, row: np.ndarray) -> int:
        """Stages 4-8 for one row: temperature, top-k, min-p, top-p, and one uniform number."""
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
