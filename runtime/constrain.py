"""Constraints on generated text (allowed characters, banned words, a pattern), compiled once per model into
one deterministic automaton over its tokens, so each sampling step is a table lookup and a comparison.

Semantics: a token is offered only if the generated text so far plus it can still be extended to an accepted
text within the characters left. An accepted text uses only `allowed` characters, contains no `banned` word
(counting the prompt's tail, so none appears across the prompt boundary either) and fully matches `pattern`.
Stop strings end a text where the text before them is accepted; their own characters are not part of it.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import SeqgenError
from .pattern import shown
from .vocab import BOUNDARY

if TYPE_CHECKING:
    from .sampling import Sampling

MAX_CELLS = 4_000_000
"""Most automaton states times vocabulary size one set of constraints may need (9 bytes a cell: ~36 MB)."""
NEVER = np.iinfo(np.int32).max
"""Distance of a state from which no accepted text can be reached."""


class Trie:
    """Matching a few words at once with Aho-Corasick's states: a state is the longest suffix of the text that is a
    proper prefix of a word. Its table over the vocabulary (`chars[i]` is token i + 1) is built once, shorter
    states first, each row its failure link's row (the next shorter such suffix) with its own children written
    over it, so a step is a lookup: `next` [states, width], the state after each token, and `ended`, the length
    of the longest word the text then ends with (0: none). State i is `prefixes[i]`; the empty text is state 0."""

    def __init__(self, words: Sequence[str], chars: tuple[str, ...]) -> None:
        words = frozenset(words)
        self.prefixes = sorted({w[:i] for w in words for i in range(len(w))}, key=len)
        self.index = {prefix: i for i, prefix in enumerate(self.prefixes)}
        self.longest = max(map(len, words))
        self.token = {char: i for i, char in enumerate(chars, 1)}
        width = len(chars) + 1
        if len(self.prefixes) * width > MAX_CELLS:
            raise _too_many_states(width)
        self.next = np.zeros((len(self.prefixes), width), np.int32)
        self.ended = np.zeros((len(self.prefixes), width), np.int32)
        below: dict[int, list[tuple[int, int]]] = {}  # a state's children: (token, child or -length of a word)
        for text in {*self.prefixes[1:], *words}:  # every character is the model's (see _writable)
            below.setdefault(self.index[text[:-1]], []).append((self.token[text[-1]], self.index.get(text, -len(text))))
        fail = [0] * len(self.prefixes)
        for state in range(len(self.prefixes)):
            if state:
                self.next[state], self.ended[state] = self.next[fail[state]], self.ended[fail[state]]
            for token, child in below.get(state, []):
                if child > 0:  # a longer proper prefix: its failure link is where the parent's row led
                    fail[child] = int(self.next[fail[state], token]) if state else 0
                    self.next[state, token] = child
                if child < 0 or self.prefixes[child] in words:
                    self.ended[state, token] = abs(child) if child < 0 else len(self.prefixes[child])

    def step(self, prefix: str, char: str) -> tuple[str, int]:
        """The state after `char`, and the length of the longest word the text now ends with (0 if none)."""
        state, token = self.index[prefix], self.token[char]
        return self.prefixes[self.next.item(state, token)], self.ended.item(state, token)

    def state_after(self, text: str) -> str:
        """The state after `text`, taking no notice of words wholly inside it."""
        tail = text[-(self.longest - 1):] if self.longest > 1 else ""
        return next(tail[i:] for i in range(len(tail) + 1) if tail[i:] in self.index)


def _writable(texts: Sequence[str], chars: tuple[str, ...]) -> list[str]:
    """The texts made only of the model's characters: a banned word or stop string with any other character can
    never appear in what it writes, so it costs no automaton states."""
    return [text for text in texts if set(text) <= set(chars)]


def _too_many_states(width: int) -> SeqgenError:
    return SeqgenError(f"the constraints need more than {MAX_CELLS // width} automaton states for this vocabulary; "
                       "use a simpler pattern, or fewer banned words or stop strings")


class Automaton:
    """A deterministic automaton over token ids: `next` [states, vocab] (-1: refused; the end token's column is
    always -1), `accepting` [states]. `steps` [states, vocab] is what sampling reads: how many characters,
    this token included, the shortest accepted text through it needs (NEVER if none)."""

    def __init__(self, next_: np.ndarray, accepting: np.ndarray, starts: dict[Hashable, int],
                 start_of: Callable[[str], Hashable]) -> None:
        self.next = next_
        self.accepting = accepting
        self.distance = _distances(next_, accepting)
        safe = np.where(next_ >= 0, next_, 0)
        self.steps = np.where((next_ >= 0) & (self.distance[safe] < NEVER), self.distance[safe] + 1, NEVER)
        self.steps = self.steps.astype(np.int32)
        # per state, for the per-step lookup: what is refused with room to spare, and from how many characters
        # left on that holds; whether the text can grow at all; whether it is accepted (as Python values)
        self.refused = self.steps == NEVER
        self.roomy = np.where(self.refused, 0, self.steps).max(axis=1).tolist()
        self.grows = (~self.refused).any(axis=1).tolist()
        self.accepting_states = accepting.tolist()
        self._starts = starts
        self._start_of = start_of

    def refused_within(self, state: int, left: int) -> tuple[np.ndarray, bool]:
        """The tokens ([vocab] bool; the end token always among them) after which no accepted text fits in
        `left` characters, and whether any token is not refused."""
        if left >= self.roomy[state]:
            return self.refused[state], self.grows[state]
        refused = self.steps[state] > left
        return refused, not refused.all()

    def advance(self, states: list[int], tokens: np.ndarray) -> list[int]:
        """Each row's state (-1 once ended) after one more token per row; the end token ends a row."""
        following = []
        for state, token in zip(states, tokens.tolist()):
            if state < 0 or token == BOUNDARY:
                following.append(-1)
                continue
            state = self.next.item(state, token)
            if state < 0:
                raise SeqgenError("text fed after sampling began breaks the constraints; start a new Sampler for it")
            following.append(state)
        return following

    def start(self, text: str) -> int:
        """The state of a row whose text before generation is `text` (only its tail matters)."""
        return self._starts[self._start_of(text)]


def _distances(next_: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """Fewest characters from each state to an accepting one (NEVER if none): a breadth-first search backwards
    from the accepting states, so each transition is looked at once however long the shortest texts are (a pass
    over the whole table per length took 39 s for `.{3000}` with a stop string)."""
    sources, _ = np.nonzero(next_ >= 0)
    targets = next_[next_ >= 0]
    order = np.argsort(targets, kind="stable")
    before, bounds = sources[order], np.searchsorted(targets[order], np.arange(len(accepting) + 1))
    distance = np.where(accepting, 0, NEVER).astype(np.int64)
    frontier, length = np.flatnonzero(accepting), 0
    while frontier.size:
        length += 1
        reached = np.unique(np.concatenate([before[bounds[s] : bounds[s + 1]] for s in frontier.tolist()]))
        frontier = reached[distance[reached] == NEVER]
        distance[frontier] = length
    return distance


@functools.lru_cache(maxsize=16)
def compile_constraints(chars: tuple[str, ...], allowed: str | None, banned: tuple[str, ...], pattern: str | None,
                        stop: tuple[str, ...]) -> Automaton:
    """The automaton of these constraints over a vocabulary (`chars[i]` is token i + 1); cached, since a server
    sees the same constraints again and again."""
    width = len(chars) + 1
    usable = np.ones(width, bool) if allowed is None else np.array([False, *(c in allowed for c in chars)])
    usable[BOUNDARY] = False
    words = _writable(banned, chars)
    trie = Trie(words, chars) if words else None
    if pattern is not None:
        from .pattern import pattern_table  # here: the pattern engine is an optional extra

        table, pattern_accepting, initial = pattern_table(pattern, chars)
    else:
        table, pattern_accepting, initial = np.zeros((1, width), np.int32), np.ones(1, bool), 0
    table = np.where(usable, table, -1)

    def moves(state: tuple[int, int]) -> list[tuple[int, int] | None]:
        """Pattern state and banned-word state after each token; None where refused."""
        at, word_state = state
        if trie is None:
            return [None if following < 0 else (following, 0) for following in table[at].tolist()]
        return [None if following < 0 or ended else (following, after) for following, after, ended
                in zip(table[at].tolist(), trie.next[word_state].tolist(), trie.ended[word_state].tolist())]

    prefixes = trie.prefixes if trie is not None else [""]
    inner_states, inner_next = _explore([(initial, i) for i in range(len(prefixes))], moves, width)
    inner_accepting = np.array([bool(pattern_accepting[at]) for at, _ in inner_states])
    inner_index = {state: i for i, state in enumerate(inner_states)}
    starts = {p: inner_index[(initial, i)] for i, p in enumerate(prefixes)}

    def start_of(text: str) -> str:
        return trie.state_after(text) if trie is not None else ""

    stops = _writable(stop, chars)
    if not stops:
        return Automaton(inner_next, inner_accepting, starts, start_of)
    return _with_stops(inner_next, inner_accepting, starts, start_of, chars, Trie(stops, chars))


def _with_stops(inner_next: np.ndarray, inner_accepting: np.ndarray, starts: dict[Hashable, int],
                start_of: Callable[[str], Hashable], chars: tuple[str, ...], stops: Trie) -> Automaton:
    """The automaton that also lets a stop string end the text where the text before it is accepted.

    A state is (the inner state where the current partial stop string began, that partial stop string); the
    stop's own characters need not satisfy the inner automaton. STOPPED is the accepting state after a stop.
    """
    width = len(chars) + 1
    stopped = (-1, "")
    token = {char: i + 1 for i, char in enumerate(chars)}

    memo: dict[tuple[int, str], int] = {}

    def run(state: int, text: str) -> int:
        """The inner state after `text` from `state` (-1: refused). Texts here are a partial stop string and a
        character, cut, so they share prefixes: each (state, prefix) is computed once and remembered."""
        known = len(text)
        while known and (state, text[:known]) not in memo:
            known -= 1
        current = memo[(state, text[:known])] if known else state
        for end in range(known, len(text)):
            current = int(inner_next[current, token[text[end]]]) if current >= 0 else -1
            memo[(state, text[: end + 1])] = current
        return current

    def moves(state: tuple[int, str]) -> list[tuple[int, str] | None]:
        back, partial = state
        if state == stopped:
            return [None] * width
        out: list[tuple[int, str] | None] = [None]
        for char in chars:
            after, ended = stops.step(partial, char)
            text = partial + char
            if ended:  # a stop string ends here: allowed if the text before it is accepted
                before = run(back, text[: len(text) - ended])
                out.append(stopped if before >= 0 and inner_accepting[before] else None)
                continue
            start = run(back, text[: len(text) - len(after)])  # the inner state where `after` begins
            out.append((start, after) if start >= 0 else None)
        return out

    begin = [(state, "") for state in starts.values()]
    states, next_ = _explore([*begin, stopped], moves, width)
    accepting = np.array([s == stopped or (run(s[0], s[1]) >= 0 and inner_accepting[run(s[0], s[1])])
                          for s in states])
    index = {state: i for i, state in enumerate(states)}
    return Automaton(next_, accepting, {key: index[(state, "")] for key, state in starts.items()}, start_of)


def _explore(begin: list[Hashable], moves: Callable[[Hashable], list[Hashable | None]],
             width: int) -> tuple[list[Hashable], np.ndarray]:
    """Every state reachable from `begin` (breadth first) and the table of their transitions."""
    index: dict[Hashable, int] = {}
    order: list[Hashable] = []
    queue = deque()
    for state in begin:
        if state not in index:
            index[state] = len(order)
            order.append(state)
            queue.append(state)
    rows = []
    while queue:
        row = []
        for target in moves(queue.popleft()):
            if target is not None and target not in index:
                if len(order) * width >= MAX_CELLS:
                    raise _too_many_states(width)
                index[target] = len(order)
                order.append(target)
                queue.append(target)
            row.append(-1 if target is None else index[target])
        rows.append(row)
    return order, np.array(rows, np.int32).reshape(len(order), width)


def refuse_impossible(automaton: Automaton, states: np.ndarray, limit: int, options: Sampling,
                      chars: tuple[str, ...]) -> None:
    """Before generating: a SeqgenError with the reason if no accepted text fits in `limit` characters from
    `states`, or if every accepted text would be empty."""
    if options.allowed is not None and not set(options.allowed) & set(chars):
        raise SeqgenError("none of the allowed characters is in the model's vocabulary (see seqgen-run info)")
    need = int(automaton.distance[states].max())
    if need >= NEVER:
        made_of = "the model's characters" + (" that are allowed" if options.allowed is not None else "")
        avoiding = ", without a banned word" if options.banned else ""
        stops = ", and that no stop string cuts every match short" if options.stop else ""
        raise SeqgenError(f"no text made of {made_of}{avoiding} can fully match the pattern {shown(options.pattern)}; "
                          f"check it against the model's vocabulary (seqgen-run info){stops}")
    if need > limit:
        raise SeqgenError(f"the shortest text the constraints accept has {need} characters, but max_new_chars is "
                          f"{limit}; raise max_new_chars")
    if limit > 0 and not (automaton.steps[states] <= limit).any(axis=1).all():
        raise SeqgenError("the constraints allow no character here, so every text would be empty; allow more "
                          "characters, ban fewer words or loosen the pattern")
