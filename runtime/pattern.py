"""A regular expression as a table over a model's tokens, through interegular (the `constrain` extra).

Why interegular: it turns Python `re` syntax into a deterministic automaton, exactly what a per-step lookup needs;
it is pure Python with no dependencies of its own, small, and maintained (outlines, lark and vLLM use it). The
`regex` package's partial matching would answer "can this still match?" with a regex call per candidate
character and step, which is what the precomputed table avoids.

Syntax is Python's `re` with ASCII classes (\\w, \\d, \\s as with re.ASCII, interegular's reading); anchors,
lookarounds, word boundaries and backreferences are refused: the whole text must match anyway, and the others
are not regular.
"""

from __future__ import annotations

import os
import re
import sys
import time
import types
import warnings
from collections.abc import Callable

import numpy as np

from .errors import SeqgenError

try:  # Python's own parser of `re` syntax, to name what an automaton cannot do
    import re._parser as re_parser  # type: ignore[import-not-found]
except ImportError:  # Python 3.10
    import sre_parse as re_parser  # type: ignore[no-redef]

MAX_PATTERN_CHARS = 10_000
NOT_REGULAR = {"AT": "anchors (^ $ \\A \\Z \\b \\B)", "ASSERT": "lookarounds", "ASSERT_NOT": "lookarounds",
               "GROUPREF": "backreferences", "GROUPREF_EXISTS": "conditional groups"}


SHOWN_CHARS = 60
"""Most characters of a pattern that a message repeats: a 10,000-character pattern is not echoed whole."""


def shown(pattern: str | None) -> str:
    """The pattern as a message names it: its repr, cut after SHOWN_CHARS characters with its length said."""
    if pattern is None or len(pattern) <= SHOWN_CHARS:
        return repr(pattern)
    return f"{pattern[:SHOWN_CHARS]!r}... ({len(pattern)} characters)"


def check(pattern: object) -> str:
    """`pattern` if it is text in `re` syntax that an automaton can follow, else a SeqgenError naming the fix."""
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
        raise SeqgenError(f"pattern must be a regular expression of at most {MAX_PATTERN_CHARS} characters, "
                          f"got {type(pattern).__name__}")
    try:
        with warnings.catch_warnings():  # re's FutureWarning on "[[" would print a source line before the answer
            warnings.simplefilter("ignore", FutureWarning)
            parsed = re_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise SeqgenError(f"pattern {shown(pattern)} is not a valid regular expression ({exc})") from None
    refused = _not_regular(parsed)
    if refused:
        raise SeqgenError(f"pattern {shown(pattern)} uses {refused}, which constrained generation cannot follow; "
                          "rewrite it without them (the whole text must match, so anchors are implied)")
    return pattern


def _not_regular(parsed: object) -> str | None:
    """The first construct of a parsed pattern that a finite automaton cannot follow."""
    for op, argument in parsed:  # type: ignore[attr-defined]
        if str(op) in NOT_REGULAR:
            return NOT_REGULAR[str(op)]
        parts = argument if isinstance(argument, (tuple, list)) else ()
        for part in parts:  # groups, repeats and lookarounds hold subpatterns; alternatives a list of them
            for inner in part if isinstance(part, list) else [part]:
                found = _not_regular(inner) if isinstance(inner, re_parser.SubPattern) else None
                if found:
                    return found
    return None


MAX_COMPILE_SECONDS = 3.0
"""Longest a pattern may take to become an automaton: a determinised pattern can need exponentially many states."""


class _TooSlow(BaseException):
    """Raised inside the compile, from the trace hook, once its time is up (a BaseException, so that no
    `except Exception` on the way out can swallow it)."""


def _within_time(compile_pattern: Callable[[], object], engine_folder: str) -> object:
    """`compile_pattern()`, stopped at the first call into the engine's own code after MAX_COMPILE_SECONDS
    (interegular's state crawl calls Python for every transition, so it is checked often); the caller's trace
    hook is restored. Only engine frames are stopped: a hook that raises elsewhere, say in a garbage-collector
    callback that swallows the error, is switched off by Python and the compile would run on unbounded."""
    deadline = time.monotonic() + MAX_COMPILE_SECONDS

    def hook(frame: types.FrameType, event: str, arg: object) -> None:
        if time.monotonic() > deadline and frame.f_code.co_filename.startswith(engine_folder):
            raise _TooSlow

    previous = sys.gettrace()
    sys.settrace(hook)
    try:
        return compile_pattern()
    finally:
        sys.settrace(previous)


def load_engine() -> object:
    """interegular, or a SeqgenError that names the extra to install."""
    try:
        import interegular
    except ImportError:
        raise SeqgenError("pattern needs the constrain extra: pip install 'seqgen[constrain]' (--allowed and --ban "
                          "work without it)") from None
    return interegular


def pattern_table(pattern: str, chars: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """The pattern's automaton over tokens (`chars[i]` is token i + 1; token 0, the end, is never a character):
    transitions [states, vocab] (-1: refused), accepting [states], and the initial state."""
    interegular = load_engine()
    try:
        fsm = _within_time(lambda: interegular.parse_pattern(pattern).to_fsm(),  # type: ignore[attr-defined]
                           os.path.dirname(interegular.__file__) + os.sep)  # type: ignore[attr-defined]
    except _TooSlow:
        raise SeqgenError(f"pattern {shown(pattern)} did not compile to an automaton within {MAX_COMPILE_SECONDS:g} s "
                          "(some short patterns need exponentially many states, e.g. [ab]*a[ab]{20}); "
                          "simplify it") from None
    except Exception as exc:  # interegular raises its own types for what it does not implement
        raise SeqgenError(f"pattern {shown(pattern)} cannot be compiled to an automaton "
                          f"({type(exc).__name__}: {exc})") from None
    states = sorted(fsm.states)
    number = {state: i for i, state in enumerate(states)}
    symbols = [fsm.alphabet[char] for char in chars]
    table = np.full((len(states), len(chars) + 1), -1, np.int32)
    for state in states:
        moves = fsm.map.get(state, {})
        for token, symbol in enumerate(symbols, 1):
            if symbol in moves:
                table[number[state], token] = number[moves[symbol]]
    accepting = np.array([state in fsm.finals for state in states])
    return table, accepting, number[fsm.initial]
