"""Continuous batching: one thread per model steps every active sequence in one graph call.

A request's prompts are processed at batch 1 first (as `Model.generate` does), outside the batch, and
each choice's Sampler is started there (so impossible constraints are refused before the request
queues); between steps the scheduler retires finished and abandoned rows and admits waiting requests
by stacking their states into a fresh batched Session, and moves every row's Sampler to its new row.
Every row keeps its own Sampler (options, random stream, penalty history, constraint state), so a
seeded request draws the same characters whichever rows it shares a step with.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import SeqgenError
from ..generate import StopMatcher, prompt_session
from ..model import Model
from ..sampling import PENALTY_WINDOW, Sampler, Sampling, mask_end
from ..session import Session
from ..vocab import BOUNDARY

MIN_BATCH = 2
"""Rows in every step: a lone sequence is stepped beside a dummy row. onnxruntime computes a batch of
one by another kernel than larger batches (results differ by ~1e-6), while every row of a batch of 2
or more is computed bit for bit the same whatever its neighbours; so a seeded request gives the same
text alone as among 63 others."""
ABORTED = "abort"
"""finish_reason of a sequence cut off because the server is shutting down (vLLM's name for it)."""


@dataclass(frozen=True)
class Choice:
    """What one generated sequence asks for: the prompt, its length cap, options (stop strings, seed and
    constraints included) and random stream."""

    prompt: str
    max_chars: int
    sampling: Sampling
    stream_index: int = 0
    """Which stream of the seed this choice draws from: 0 is the seed's own (as `Model.generate`)."""
    top_logprobs: int | None = None
    """How many most likely characters to report with log-probabilities; None reports none."""


@dataclass
class Update:
    """New output of one choice after a step: emitted text, its log-probabilities, and whether it ended."""

    index: int
    text: str
    logprobs: list[tuple[str, float, list[tuple[str, float]]]]
    finish_reason: str | None = None


class QueueFull(Exception):
    """No room for another waiting request (the client should retry later)."""


class ShuttingDown(Exception):
    """The server no longer accepts requests."""


class Refused(SeqgenError):
    """A choice's constraints that no text can meet (seqgen.constrain's reason), found before generating."""


def make_sampler(choice: Choice) -> Sampler:
    """The sampler of a choice: stream 0 is seeded exactly as `Model.generate(seed=...)`; stream j > 0 is
    the seed's j-th spawned child, which no other seed's own stream can equal."""
    seed = choice.sampling.seed
    if seed is None or choice.stream_index == 0:
        return Sampler(choice.sampling)
    child = np.random.SeedSequence(seed, spawn_key=(choice.stream_index,))
    return Sampler(choice.sampling, np.random.default_rng(child))


def model_logprobs(logits: np.ndarray, line_items: bool) -> np.ndarray:
    """The model's log-probabilities ([vocab]) from one row's logits ([1, vocab], left unchanged) under the
    end rule, before any sampling option: what `logprobs` reports."""
    row = logits.astype(np.float64)
    mask_end(row, line_items)
    shifted = row[0] - row[0].max()
    return shifted - np.log(np.exp(shifted).sum())


@dataclass
class Job:
    """One request's choices as the scheduler sees them. `cancelled` may be set from any thread."""

    choices: list[Choice]
    deliver: Callable[[list[Update]], None]
    """Receives each step's updates of this job (called through the scheduler's `post`)."""
    fail: Callable[[Exception], None]
    """Receives the reason the job cannot run (called through `post`)."""
    cancelled: bool = False
    states: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Each choice's state after its prompt, filled by `Scheduler.prepare`."""
    samplers: list[Sampler] = field(default_factory=list)
    """Each choice's Sampler, started on its prompt by `Scheduler.prepare`."""


@dataclass
class _Row:
    """One active sequence of the batch."""

    job: Job
    index: int
    sampler: Sampler
    left: int
    top: int | None
    matcher: StopMatcher | None
    held: list[tuple[str, float, list[tuple[str, float]]]] = field(default_factory=list)
    finished: bool = False


class Scheduler:
    """Runs one model's requests in shared steps on its own thread.

    `post(callback)` hands a callback to the thread that owns the requests (the event loop's
    call_soon_threadsafe): each step posts one callback carrying every row's news.
    """

    def __init__(self, model: Model, *, max_batch: int, max_queue: int,
                 post: Callable[[Callable[[], None]], None]) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.post = post
        self.chars = ("", *model.vocab.chars)
        self.line_items = model.line_items
        self.steps = 0
        """Batched steps run so far (a cost counter for tests and /health)."""
        self.generated = 0
        """Characters sampled so far, over all rows."""
        self.seconds = {"graph": 0.0, "sampling": 0.0, "regroup": 0.0}
        """Where the scheduler thread's time went: graph calls, per-row sampling and bookkeeping, regrouping."""
        self._rows: list[_Row] = []
        self._session: Session | None = None
        self._waiting: deque[Job] = deque()
        self._queued = 0  # requests accepted but not yet admitted (prompt being processed, or waiting)
        self._closing = False
        self._abort = threading.Event()
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"seqgen-scheduler-{model.path.stem}", daemon=True)
        self._thread.start()

    # -- requests (any thread) -------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Rows being stepped now."""
        return len(self._rows)

    @property
    def waiting(self) -> int:
        """Requests accepted but not yet admitted to the batch."""
        return self._queued

    def reserve(self) -> None:
        """Take a place in the queue, or raise QueueFull / ShuttingDown."""
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._queued >= self.max_queue:
                raise QueueFull(f"the queue of {self.model.path.stem!r} is full ({self.max_queue} requests waiting)")
            self._queued += 1

    def release(self) -> None:
        """Give back a place taken by `reserve` for a request that will not be submitted."""
        with self._cond:
            self._queued -= 1

    def prepare(self, job: Job) -> None:
        """Process each distinct prompt of `job` once at batch 1 and start each choice's Sampler on it (slow;
        runs outside the scheduler thread). A prompt the model cannot read raises SeqgenError, constraints that
        no text of `max_chars` characters meets Refused, here, before the job is queued."""
        sessions: dict[str, Session] = {}
        samplers = []
        for choice in job.choices:
            if choice.prompt not in sessions:
                sessions[choice.prompt] = prompt_session(self.model, [choice.prompt])
            sampler = make_sampler(choice)
            try:
                sampler.start(sessions[choice.prompt], choice.max_chars)
            except SeqgenError as exc:
                raise Refused(str(exc)) from None
            samplers.append(sampler)
        states = {prompt: session.save_state() for prompt, session in sessions.items()}
        job.states, job.samplers = [states[choice.prompt] for choice in job.choices], samplers

    def submit(self, job: Job) -> None:
        """Queue a prepared job for admission; its place was taken by `reserve`."""
        with self._cond:
            if self._closing:
                self._queued -= 1
                self.post(lambda: job.fail(ShuttingDown("the server is shutting down")))
                return
            self._waiting.append(job)
            self._cond.notify()

    def drain(self) -> None:
        """Stop accepting requests and refuse the waiting ones; active rows run on until `abort` or the end."""
        with self._cond:
            self._closing = True
            refused, self._queued = list(self._waiting), self._queued - len(self._waiting)
            self._waiting.clear()
            self._cond.notify()
        for job in refused:
            self.post(lambda job=job: job.fail(ShuttingDown("the server is shutting down")))

    def abort(self) -> None:
        """End every active row now with finish_reason `abort`."""
        self._abort.set()
        with self._cond:
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Drain, abort, and wait for the thread to end."""
        self.drain()
        self.abort()
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the scheduler thread --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._rows and not self._waiting and not self._stopped:
                    self._cond.wait()
                if self._stopped and not self._rows:
                    return
                admitted = []
                while self._waiting and self.active_after(admitted) + len(self._waiting[0].choices) <= self.max_batch:
                    job = self._waiting.popleft()
                    self._queued -= 1
                    if not job.cancelled:  # a client that left while waiting costs nothing more
                        admitted.append(job)
            try:
                if self._abort.is_set():
                    self._end_all(ABORTED)
                start = time.perf_counter()
                self._regroup(admitted)
                self.seconds["regroup"] += time.perf_counter() - start
                if self._rows:
                    self._step()
            except Exception as exc:  # a fault here must not leave every client waiting forever
                self._fail_all(admitted, exc)

    def active_after(self, admitted: list[Job]) -> int:
        """Rows that will be active once `admitted` joins (finished rows still count until regrouped)."""
        return sum(not (row.finished or row.job.cancelled) for row in self._rows) + sum(
            len(job.choices) for job in admitted)

    def _end_all(self, reason: str) -> None:
        news: dict[int, tuple[Job, list[Update]]] = {}
        for row in self._rows:
            if not row.finished:
                row.finished = True
                tail = row.matcher.flush() if row.matcher else ""
                news.setdefault(id(row.job), (row.job, []))[1].append(
                    Update(row.index, tail, self._take_held(row, len(tail)), reason))
        self._post_news(news)

    def _regroup(self, admitted: list[Job]) -> None:
        """Retire finished and cancelled rows and stack in the admitted ones: a new batched Session."""
        keep = [r for r, row in enumerate(self._rows) if not (row.finished or row.job.cancelled)]
        if len(keep) == len(self._rows) and not admitted:
            return
        parts = [_select(self._session.save_state(), keep)] if keep and self._session is not None else []
        rows = [self._rows[r] for r in keep]
        news: dict[int, tuple[Job, list[Update]]] = {}
        for job in admitted:
            for index, (choice, state, sampler) in enumerate(zip(job.choices, job.states, job.samplers)):
                if choice.max_chars == 0:
                    news.setdefault(id(job), (job, []))[1].append(Update(index, "", [], "length"))
                    continue
                stops = choice.sampling.stop
                rows.append(_Row(job, index, sampler, choice.max_chars, choice.top_logprobs,
                                 StopMatcher(stops) if stops else None))
                parts.append(state)
            job.states, job.samplers = [], []
        self._post_news(news)
        self._rows = rows
        self._session = _stacked(self.model, parts) if rows else None
        for r, row in enumerate(rows):  # each sampler carries its row's history and constraint state over
            row.sampler.move(self._session, r)  # type: ignore[arg-type]

    def _step(self) -> None:
        session = self._session
        assert session is not None
        start = time.perf_counter()
        logits = session.current()
        ids = np.zeros(session.batch_size, np.int64)  # the dummy row, if any, is fed the boundary
        news: dict[int, tuple[Job, list[Update]]] = {}
        for r, row in enumerate(self._rows):  # Session.sample with one Sampler per row, minus rows that ended
            if row.finished or row.job.cancelled:
                continue  # a cancelled row is retired at the next regroup; it costs this step at most
            self.generated += 1
            logprobs = None if row.top is None else model_logprobs(logits[r : r + 1], self.line_items)
            ids[r] = row.sampler.choose(session, r)[0]
            update = self._advance(row, int(ids[r]), logprobs)
            if update is not None:
                news.setdefault(id(row.job), (row.job, []))[1].append(update)
        self._post_news(news)
        stepped = time.perf_counter()
        self.seconds["sampling"] += stepped - start
        if all(row.finished or row.job.cancelled for row in self._rows):
            return  # nobody needs the next state
        try:
            session.step(ids)
        except SeqgenError as exc:  # a ReLU model's state overflowed: end the rows it happened to
            self._fail_overflowed(session.current(), exc)
        self.steps += 1
        self.seconds["graph"] += time.perf_counter() - stepped

    def _advance(self, row: _Row, token: int, logprobs: np.ndarray | None) -> Update | None:
        """Book one sampled token of a row; the news to send, if any."""
        row.left -= 1
        char = self.chars[token]
        if logprobs is not None and token != BOUNDARY:
            order = np.argsort(-logprobs, kind="stable")[: row.top]
            row.held.append((char, float(logprobs[token]),
                             [(self.chars[int(t)], float(logprobs[t])) for t in order]))
        finish = "stop" if token == BOUNDARY else None
        text = char
        if row.matcher is not None and char:
            text, hit = row.matcher.push(char)
            if hit:
                finish = "stop"
        if finish is None and row.left == 0:
            finish = "length"
        if finish is not None:
            row.finished = True
            if row.matcher is not None:
                text += row.matcher.flush()
        if not text and finish is None:
            return None
        return Update(row.index, text, self._take_held(row, len(text)), finish)

    @staticmethod
    def _take_held(row: _Row, count: int) -> list[tuple[str, float, list[tuple[str, float]]]]:
        """The log-probabilities of the next `count` emitted characters (held back with their text)."""
        if row.top is None:
            return []
        taken, row.held = row.held[:count], row.held[count:]
        if row.finished:
            row.held = []
        return taken

    def _fail_all(self, admitted: list[Job], exc: Exception) -> None:
        """Fail every active and just-admitted job and start over with an empty batch."""
        jobs = {id(row.job): row.job for row in self._rows} | {id(job): job for job in admitted}
        for job in jobs.values():
            self.post(lambda job=job: job.fail(exc))
        self._rows, self._session = [], None

    def _fail_overflowed(self, logits: np.ndarray, exc: SeqgenError) -> None:
        bad = ~np.isfinite(logits).all(axis=1)
        for row, broken in zip(self._rows, bad):
            if broken and not row.finished:
                row.finished = True
                self.post(lambda job=row.job: job.fail(exc))

    def _post_news(self, news: dict[int, tuple[Job, list[Update]]]) -> None:
        if news:
            batches = list(news.values())
            self.post(lambda: [job.deliver(updates) for job, updates in batches])


def _select(saved: dict[str, np.ndarray], rows: list[int]) -> dict[str, np.ndarray]:
    """The saved state of some rows of a batch (state arrays are [layers, batch, hidden])."""
    return {name: value[:, rows] if value.ndim == 3 else value[rows] for name, value in saved.items()}


def _stacked(model: Model, parts: list[dict[str, np.ndarray]]) -> Session:
    """One Session continuing every row of `parts` (saved states). Token histories keep only the
    repetition penalty's window, left-padded with the boundary (which the penalty leaves alone); the
    constraints' state lives in each row's Sampler (Sampler.move), not in the history."""
    width = min(PENALTY_WINDOW, max(part["tokens"].shape[1] for part in parts))
    histories = []
    for part in parts:
        tail = part["tokens"][:, -width:]
        pad = np.full((tail.shape[0], width - tail.shape[1]), BOUNDARY, np.int64)
        histories.append(np.concatenate([pad, tail], axis=1))
    merged = {name: np.concatenate([part[name] for part in parts], axis=parts[0][name].ndim - 2)
              for name in parts[0] if name != "tokens"}
    merged["tokens"] = np.concatenate(histories)
    if len(merged["tokens"]) < MIN_BATCH:  # a dummy row: a copy of the first
        merged = {name: np.concatenate([value, value[:, :1] if value.ndim == 3 else value[:1]], axis=value.ndim - 2)
                  for name, value in merged.items()}
    session = Session(model, len(merged["tokens"]))
    session.load_state(merged)
    return session
